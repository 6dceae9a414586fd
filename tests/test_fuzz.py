"""A short run of the fuzzing harness (bench/fuzz.py): generated bad inputs to every reader
give a clear error naming the file, never a crash."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import fuzz  # noqa: E402


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_generated_inputs_never_crash_a_reader(target: str) -> None:
    outcome = fuzz.run_target(target, examples=40)
    assert outcome.inputs == 40
    assert outcome.crashes == [], outcome.crashes[0]
    assert outcome.unnamed == [], outcome.unnamed[:3]
    assert sum(outcome.errors.values()) > 0  # the generators do reach the error paths
