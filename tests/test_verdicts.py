"""Intervals and the verdict rule on data with known answers; the metric registry; KID's estimator."""

import math

import pandas as pd
import pytest
import torch

from harness.reporting import comparison
from harness.evaluation import metrics, scoring
from harness.evaluation.scoring import Evaluation, Metric, paired_difference
from harness.evaluation.verdicts import Change, evidence, paired_changes, scalar_verdict, space_verdict, t_interval, verdict


def test_t_interval_matches_the_textbook_paired_example():
    # Student (1908) / Cushny & Peebles sleep data: extra hours of sleep, drug 2 minus drug 1, 10 patients.
    # The textbook paired t-test (R: t.test(extra ~ group, data = sleep, paired = TRUE)) gives mean 1.58 and the
    # 95% interval [0.7001142, 2.4598858].
    diffs = [1.2, 2.4, 1.3, 1.3, 0.0, 1.0, 1.8, 0.8, 4.6, 1.4]
    mean, lo, hi = t_interval(diffs)
    assert mean == pytest.approx(1.58)
    assert lo == pytest.approx(0.7001142, abs=1e-6) and hi == pytest.approx(2.4598858, abs=1e-6)
    assert all(math.isnan(v) for v in t_interval([1.0])[1:])


def _evals(values_per_seed: list[dict]) -> list[Evaluation]:
    return [Evaluation(n=100, values=v) for v in values_per_seed]


SPACES = ["vgg", "resnet"]


def _run(start: dict, finals: list[dict], seeds_noise=(0.0, 0.01, -0.01, 0.02, -0.02)) -> str:
    """Verdict of final vs start with the same change in both spaces, small seed-to-seed noise."""
    keys = [scoring.key(m, s) for s in SPACES for m in start]
    a, b = [], []
    for i, final in enumerate(finals):
        eps = seeds_noise[i]
        b.append(Evaluation(100, {scoring.key(m, s): v for s in SPACES for m, v in start.items()}))
        a.append(Evaluation(100, {scoring.key(m, s): v + eps * abs(v or 1) for s in SPACES for m, v in final.items()}))
    return verdict(paired_changes(a, b, keys), SPACES)


START = {"kid": 100.0, "fid": 300.0, "precision": 0.70, "recall": 0.30, "class_tv": 0.15}


def test_verdict_rule_on_paired_synthetic_data_with_known_answers():
    better_kid = {**START, "kid": 80.0}
    worse_recall = {**START, "recall": 0.20}
    both = {**START, "kid": 80.0, "recall": 0.20, "fid": 360.0}
    assert _run(START, [better_kid] * 5) == "improved (KID)"
    assert _run(START, [worse_recall] * 5) == "degraded (recall)"
    assert _run(START, [both] * 5) == "mixed (worse: FID, recall; better: KID)"
    assert _run(START, [START] * 5) == "no significant change"


def test_a_change_inside_its_seed_spread_is_not_significant():
    start = Evaluation(100, {"kid_vgg": 100.0})
    finals = [Evaluation(100, {"kid_vgg": 100.0 + d}) for d in (-3.0, 2.5, -1.0)]
    c = paired_changes(finals, [start] * 3, ["kid_vgg"])["kid_vgg"]
    assert c.lo < 0 < c.hi and space_verdict({"kid_vgg": c}, "vgg") == "no significant change"


def test_one_seed_uses_the_paired_half_sample_interval():
    # Half-sample values move together (same latents): their differences are tight, so a 5-unit change is clear
    # although each evaluation's own spread (about +-10) is wide.
    halves_b = [100.0 + 10 * math.sin(i) for i in range(20)]
    halves_a = [h + 5.0 + 0.1 * math.cos(i) for i, h in enumerate(halves_b)]
    a = Evaluation(100, {"kid_vgg": 105.0}, {"kid_vgg": halves_a})
    b = Evaluation(100, {"kid_vgg": 100.0}, {"kid_vgg": halves_b})
    lo_a, hi_a = a.interval("kid_vgg")
    assert hi_a - lo_a > 20  # a single evaluation's own interval is wide
    delta, lo, hi = paired_difference(a, b, "kid_vgg")
    assert delta == 5.0 and 4.5 < lo < 5.0 < hi < 5.5
    changes = paired_changes([a], [b], ["kid_vgg"])
    assert changes["kid_vgg"].n == 1 and "1 seed" in changes["kid_vgg"].method
    assert space_verdict(changes, "vgg") == "degraded (KID)"
    assert evidence(1) == "1 seed" and evidence(3) == "screening" and evidence(5) == "claim"


def test_spaces_that_disagree_give_feature_space_dependent():
    changes = {"kid_vgg": Change(-5, -6, -4, 5, "t"), "kid_resnet": Change(5, 4, 6, 5, "t")}
    v = verdict(changes, SPACES)
    assert v.startswith("feature-space dependent") and "vgg: improved" in v and "resnet: degraded (KID)" in v
    # worse in one space each, nowhere in both: nothing is real
    split = {"recall_vgg": Change(-0.1, -0.12, -0.08, 5, "t"), "fid_resnet": Change(9, 8, 10, 5, "t")}
    assert verdict(split, SPACES) == "feature-space dependent (vgg: degraded (recall); resnet: degraded (FID))"
    # the flagged lr_sweep trial's pattern: FID and recall worse in both spaces, precision better in one only
    both = {"fid_vgg": Change(40, 30, 50, 1, "h"), "fid_resnet": Change(9, 8, 10, 1, "h"),
            "recall_vgg": Change(-0.08, -0.1, -0.06, 1, "h"), "recall_resnet": Change(-0.06, -0.08, -0.04, 1, "h"),
            "precision_vgg": Change(0.02, 0.01, 0.03, 1, "h"), "precision_resnet": Change(0.0, -0.01, 0.01, 1, "h")}
    assert verdict(both, SPACES) == "degraded (FID, recall) [in some spaces only: precision]"
    # better in both spaces, but worse in one: not an improvement
    shaky = {"kid_vgg": Change(-5, -6, -4, 5, "t"), "kid_resnet": Change(-5, -6, -4, 5, "t"),
             "recall_vgg": Change(-0.1, -0.12, -0.08, 5, "t")}
    assert verdict(shaky, SPACES).startswith("feature-space dependent")
    # better in both spaces on one metric, better in one space only on another, worse nowhere: an improvement on
    # the first, the second named (seed_report_repro's mse_teacher pattern)
    firm = {"class_tv_vgg": Change(-0.04, -0.06, -0.01, 3, "t"), "class_tv_resnet": Change(-0.01, -0.02, -0.008, 3, "t"),
            "fid_vgg": Change(-23, -28, -18, 3, "t"), "fid_resnet": Change(0.1, -0.2, 0.5, 3, "t")}
    assert verdict(firm, SPACES) == "improved (class TV) [in some spaces only: FID]"


def test_direction_comes_from_the_registry():
    up = Change(0.1, 0.05, 0.15, 5, "t")
    assert up.sign(lower_is_better=False) == 1 and up.sign(lower_is_better=True) == -1
    assert Change(0.1, -0.05, 0.15, 5, "t").sign(False) == 0
    assert scalar_verdict([-0.5, -0.4, -0.6]) == "improved" and scalar_verdict([-0.5]) == "1 seed: not judged"


def test_a_metric_registered_in_one_place_appears_in_the_tables(monkeypatch):
    monkeypatch.setitem(scoring.METRICS, "brightness", Metric("brightness", "mean feature", "raw", False, False,
                                                              "fidelity", lambda s: float(s.feats.mean())))
    ref = scoring.Reference("vgg", torch.randn(50, 4), torch.arange(50) % 10)
    fake = torch.randn(30, 4) + 1
    values = ref.score(fake, torch.arange(30) % 10).values()
    assert values["brightness"] == pytest.approx(float(fake.mean()))
    evals = [Evaluation(30, {scoring.key(m, "vgg"): v for m, v in values.items()})]
    records = [comparison.RunRecord("v", 0, "completed", evals[0], evals[0])]
    keys = comparison.image_keys(records)
    assert "brightness_vgg" in keys
    table = pd.DataFrame(comparison.start_row(records, keys) + comparison.variant_rows(records, keys))
    md = comparison.to_markdown(table, keys)
    assert "mean feature (raw, vgg features)" in md


def test_a_variant_with_more_seeds_than_its_reference_is_paired_on_the_shared_seeds_only():
    """A variant at 5 seeds against a reference at 3: the vs-reference change is over the 3 shared seeds, and the
    tables say 3 paired seeds (screening), not the variant's 5 (claim)."""
    keys = [scoring.key("kid", s) for s in SPACES]
    start = Evaluation(100, {k: 100.0 for k in keys})
    ref_kid = {0: 90.0, 1: 92.0, 2: 91.0}
    var_kid = {0: 80.0, 1: 83.0, 2: 81.0, 3: 50.0, 4: 40.0}  # seeds 3 and 4 have no partner: they must not count
    records = ([comparison.RunRecord("ref", s, "completed", start, Evaluation(100, {k: v for k in keys})) for s, v in ref_kid.items()]
               + [comparison.RunRecord("var", s, "completed", start, Evaluation(100, {k: v for k in keys})) for s, v in var_kid.items()])
    rows = {r["variant"]: r for r in comparison.variant_rows(records, keys, reference="ref")}
    var = rows["var"]
    assert (var["n_seeds"], var["n_pairs"], var["evidence"], var["evidence_vs_ref"]) == (5, 3, "claim", "screening")
    mean, lo, hi = t_interval([var_kid[s] - ref_kid[s] for s in ref_kid])
    assert mean == pytest.approx(-29 / 3)  # (-10, -9, -10) / 3
    assert (var["r_kid_vgg"], var["r_kid_vgg_lo"], var["r_kid_vgg_hi"]) == (pytest.approx(mean), pytest.approx(lo), pytest.approx(hi))
    md = comparison.to_markdown(pd.DataFrame(comparison.variant_rows(records, keys, reference="ref")), keys, reference="ref")
    verdicts = md.split("## Paired change vs the starting generator")[0]
    assert "| var | 5 (claim) |" in verdicts and "| 3 (screening) |" in verdicts
    vs_ref = md.split("## Paired change vs `ref`, vgg features")[1].split("##")[0]
    assert "| paired seeds |" in vs_ref and "| var | 3 (screening) |" in vs_ref


def test_unbiased_mmd_equals_torchmetrics_kid_on_full_subsets():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(80, 6, generator=g), torch.randn(80, 6, generator=g) + 0.3
    k_rr = metrics.kernel_sums(real).sum() / (80 * 79)
    ours = metrics.mmd2_unbiased(float(k_rr), metrics.poly_kernel(fake, fake), metrics.kernel_sums(fake, real), 80)
    theirs, _ = metrics.kid(real, fake, subsets=3, subset_size=80, seed=0)
    assert ours == pytest.approx(theirs, rel=1e-5)
    # a subset by mask equals the estimate on the sliced sets
    idx = torch.arange(0, 80, 2)
    sub = metrics.mmd2_unbiased(float(k_rr), metrics.poly_kernel(fake, fake), metrics.kernel_sums(fake, real), 80, subset=idx)
    direct = metrics.mmd2_unbiased(float(k_rr), metrics.poly_kernel(fake[idx], fake[idx]), metrics.kernel_sums(fake[idx], real), 80)
    assert sub == pytest.approx(direct, rel=1e-9)


def test_class_balance_metrics_known_values():
    uniform = torch.full((10,), 0.1)
    two = torch.tensor([0.25, 0.25] + [0.0625] * 8)
    assert metrics.class_tv(uniform, uniform) == 0.0
    assert metrics.class_tv(two, uniform) == pytest.approx(0.30)  # 0.5 * (2 * 0.15 + 8 * 0.0375)
    assert metrics.max_class_share(two) == pytest.approx(0.25) and metrics.max_class_share(uniform) == pytest.approx(0.1)


def test_scored_set_matches_the_reference_prdc_and_half_samples_slice_it():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(300, 5, generator=g), torch.randn(200, 5, generator=g) * 1.2
    ref = scoring.Reference("vgg", real, torch.arange(300) % 10)
    scored = ref.score(fake, torch.arange(200) % 10)
    expected = metrics._prdc(real, fake, 3, 5)
    for k, v in expected.items():
        assert scored.prdc[k] == pytest.approx(v, abs=1e-12)
    idx = torch.randperm(200, generator=g)[:100]
    half = scored.half(idx)
    for k, v in metrics._prdc(real, fake[idx], 3, 5).items():
        assert half.prdc[k] == pytest.approx(v, abs=1e-12)
