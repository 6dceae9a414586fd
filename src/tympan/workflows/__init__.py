"""Workflows: the one orchestrator (run folder, cross-validation, recipes, ablation,
evaluation, reports) that the CLI, :class:`tympan.Classifier` and the benchmarks call."""
