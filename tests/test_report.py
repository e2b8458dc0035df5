import json

import pandas as pd

from harness.config import DIConfig, preset
from harness.report import aggregate, verdict, write_report


def test_verdict_needs_a_change_larger_than_twice_the_seed_spread():
    assert verdict([-0.10, -0.11, -0.09]) == "improved"
    assert verdict([0.10, 0.11, 0.09]) == "degraded"
    assert verdict([-0.10, 0.05, -0.02]) == "no significant change"
    assert verdict([-0.5]) == "single seed"


def fake_run(root, name, cfg: DIConfig, start_kid, final_kid, status="completed"):
    d = root / name
    d.mkdir()
    cfg.save(d / "config.json")
    metrics = lambda k: {"kid": k, "precision": 0.5, "recall": 0.4, "coverage": 0.3, "fid": 10.0}
    (d / "summary.json").write_text(json.dumps({"status": status, "reason": "", "start": metrics(start_kid),
                                                "final": metrics(final_kid), "wall_s": 1.0}))
    pd.DataFrame({"round": [0, 10], "kid": [start_kid, final_kid], "precision": [0.5, 0.5], "recall": [0.4, 0.4]}).to_csv(d / "evals.csv", index=False)
    return d


def test_aggregate_groups_seeds_and_names_variants_by_what_differs(tmp_path):
    dirs = []
    for seed, final in enumerate([1.0, 1.1, 0.9]):
        dirs.append(fake_run(tmp_path, f"a{seed}", preset("reference-gan", seed=seed, eval_n=100), 2.0, final))
    for seed, final in enumerate([2.5, 2.6, 2.4]):
        dirs.append(fake_run(tmp_path, f"b{seed}", preset("reference-gan", seed=seed, aux_steps=5, eval_n=999), 2.0, final))
    table = write_report(dirs, tmp_path / "out", "t", "test").set_index("variant")
    assert list(table.index) == ["reference-gan aux_steps=1", "reference-gan aux_steps=5"]  # eval_n is not a variant
    a = table.loc["reference-gan aux_steps=1"]
    assert a.n_seeds == 3 and abs(a.kid - 1.0) < 1e-12 and abs(a.kid_std - 0.1) < 1e-12 and a.verdict == "improved"
    assert table.loc["reference-gan aux_steps=5"].verdict == "degraded"
    for name in ("table.csv", "table.md", "curves.png", "manifest.json"):
        assert (tmp_path / "out" / name).is_file()


def test_failed_runs_are_flagged(tmp_path):
    dirs = [fake_run(tmp_path, "x0", preset("toy", seed=0), 1.0, 0.5), fake_run(tmp_path, "x1", preset("toy", seed=1), 1.0, 0.5, "diverged")]
    table = aggregate([{"dir": str(d), "summary": json.loads((d / "summary.json").read_text()),
                        "config": json.loads((d / "config.json").read_text())} for d in dirs])
    assert table.iloc[0].verdict == "failed runs"
