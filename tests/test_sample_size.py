"""harness.sample_size: the spread of single evaluations, pair differences, and the half-sample sd it checks."""

import json

import pandas as pd
import pytest
import torch

from harness.evaluation import sample_size, scoring


def _draws(values_a, values_b, n=100, protocol="matched"):
    rows = [{"model": m, "n": n, "n_real": n, "protocol": protocol, "repeat": r, "precision_vgg": v}
            for m, vals in (("a", values_a), ("b", values_b)) for r, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_summary_is_the_spread_over_repeats():
    draws = _draws([0.5, 0.6, 0.7, 0.8], [0.1, 0.1, 0.1, 0.1])
    s = sample_size.summarise(draws).set_index("model")
    sd = pd.Series([0.5, 0.6, 0.7, 0.8]).std(ddof=1)
    assert s.loc["a", "precision_vgg_mean"] == pytest.approx(0.65)
    assert s.loc["a", "precision_vgg_sd"] == pytest.approx(sd)
    assert s.loc["a", "precision_vgg_halfwidth"] == pytest.approx(1.959964 * sd, rel=1e-6)
    assert s.loc["b", "precision_vgg_sd"] == pytest.approx(0.0)


def test_pair_difference_is_paired_by_repeat_and_counts_wrong_signs():
    # b - a per repeat: +0.3, +0.2, -0.1, +0.2 -> mean +0.15, one of four comparisons has the wrong sign
    draws = _draws([0.1, 0.2, 0.5, 0.3], [0.4, 0.4, 0.4, 0.5])
    p = sample_size.pair_differences(draws, "a", "b").iloc[0]
    d = pd.Series([0.3, 0.2, -0.1, 0.2])
    assert p["pair"] == "b - a"
    assert p["precision_vgg_mean"] == pytest.approx(d.mean())
    assert p["precision_vgg_sd"] == pytest.approx(d.std(ddof=1))
    assert p["precision_vgg_sign_wrong"] == pytest.approx(0.25)


def test_every_draw_has_fresh_latents_and_the_matched_real_draw_is_shared_per_repeat():
    seeds = {sample_size.draw_seed(0, i, n, r) for i in range(3) for n in (100, 5000) for r in range(100)}
    assert len(seeds) == 3 * 2 * 100
    assert torch.equal(sample_size.real_subset(100, 4, 0), sample_size.real_subset(100, 4, 0))
    assert not torch.equal(sample_size.real_subset(100, 4, 0), sample_size.real_subset(100, 5, 0))


def test_half_sample_sd_matches_the_spread_of_independent_evaluations():
    """The interval every table prints (half-sampling, harness.evaluation.scoring) against the truth: the sd of the same
    metric over 40 independent sample sets. Gaussian features, so nothing but the estimator is tested."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(2000, 8, generator=g)
    ref = scoring.Reference("synthetic", real, torch.randint(0, 10, (2000,), generator=g))
    refs = {"vgg": ref}
    keys = ("precision_vgg", "recall_vgg", "kid_vgg", "fid_vgg")
    per_draw, half_sds = {k: [] for k in keys}, {k: [] for k in keys}
    for _ in range(40):
        fake = 0.3 + 1.2 * torch.randn(600, 8, generator=g)
        ev = scoring.evaluate_features({"vgg": (fake, torch.randint(0, 10, (600,), generator=g))}, refs, half_samples=20)
        for k in per_draw:
            per_draw[k].append(ev.values[k])
            half_sds[k].append(ev.sd(k))
    for k in per_draw:
        true_sd = pd.Series(per_draw[k]).std(ddof=1)
        estimate = sum(half_sds[k]) / len(half_sds[k])
        # measured: 0.79 (precision) to 1.15 (recall); a sqrt(2) slip either way leaves this band
        assert 0.7 < estimate / true_sd < 1.25, (k, estimate, true_sd)


def test_command_writes_the_tables_and_the_seed000_section(tmp_path, capsys):
    sample_size.main(["--n", "100", "--repeats", "2", "--results-dir", str(tmp_path)])
    out = tmp_path / "sample_size"
    for name in ("draws.csv", "table.csv", "pairs.csv", "table.md", "spread.png", "manifest.json"):
        assert (out / name).is_file(), name
    draws = pd.read_csv(out / "draws.csv")
    assert set(draws.protocol) == {"bank", "matched"} and set(draws.n_real) == {100, 10_000}
    assert len(draws) == 2 * 2 * 2  # models x repeats x protocols
    md = (out / "table.md").read_text()
    assert "Seed 000's Table 1" in md and "theirs" in md and "resnet features" in md
    # --report redraws the same tables from draws.csv and keeps the measuring command in the manifest
    command = json.loads((out / "manifest.json").read_text())["command"]
    (out / "table.md").unlink()
    sample_size.main(["--results-dir", str(tmp_path), "--report"])
    assert (out / "table.md").read_text() == md and json.loads((out / "manifest.json").read_text())["command"] == command


def test_sd_interval_is_the_chi_square_interval():
    lo, hi = sample_size.sd_interval(1.0, 8)  # 7 degrees of freedom: chi2 quantiles 1.690 and 16.013
    assert lo == pytest.approx((7 / 16.0128) ** 0.5, rel=1e-4) and hi == pytest.approx((7 / 1.68987) ** 0.5, rel=1e-4)


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(SystemExit):
        sample_size.main(["--n", "100", "5000", "--repeats", "3"])
    with pytest.raises(SystemExit):
        sample_size.main(["--n", "20000", "--repeats", "3"])
