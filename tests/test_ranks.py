"""Which process writes under DDP: rank 0 from the launcher's environment."""

from __future__ import annotations

import pytest

from tympan.workflows.ranks import is_global_zero

LAUNCH_VARIABLES = ("RANK", "SLURM_PROCID", "NODE_RANK", "LOCAL_RANK")


@pytest.mark.parametrize("env, zero", [
    ({}, True),
    ({"RANK": "0", "LOCAL_RANK": "0"}, True),       # torchrun, first process
    ({"RANK": "3", "LOCAL_RANK": "1"}, False),      # torchrun, another one
    ({"SLURM_PROCID": "5"}, False),                 # srun
    ({"LOCAL_RANK": "1"}, False),                   # started by Lightning's launcher
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),  # first process of the second node
])
def test_rank_zero_comes_from_the_launchers_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], zero: bool
) -> None:
    for variable in LAUNCH_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    assert is_global_zero() is zero
