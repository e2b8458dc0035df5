"""Golden values: a seeded 20-round run of each preset reproduces the per-round statistics, the evaluations and
the final weights recorded in tests/golden/ (python -m tests.golden.record). A refactor must leave them as they
are; a change of behaviour re-records them in its own commit."""

import json

import pytest

from tests.golden.record import HERE, PRESETS, differences, run_golden


@pytest.mark.parametrize("name", PRESETS)
def test_a_seeded_run_reproduces_its_golden_values(tmp_path, name):
    expected = json.loads((HERE / f"{name}.json").read_text())
    got = json.loads(json.dumps(run_golden(name, tmp_path)))
    worst = max(differences(expected, got), default=(0.0, ""))
    assert worst[0] <= 1e-6, f"{name}: relative difference {worst[0]:.3g} at {worst[1]}"
    assert len(got["rounds"]) == 20 and got["status"] == "completed"


def test_the_comparison_sees_a_changed_number():
    """The check itself can fail: one changed statistic, key or length is reported."""
    base = {"a": [1.0, 2.0], "b": {"c": "x"}}
    assert max(differences(base, {"a": [1.0, 2.0 + 1e-5], "b": {"c": "x"}}))[0] > 1e-6
    assert max(differences(base, {"a": [1.0], "b": {"c": "x"}}))[0] == float("inf")
    assert max(differences(base, {"a": [1.0, 2.0], "b": {"c": "y"}}))[0] == float("inf")
    assert max(differences(base, base))[0] == 0.0
