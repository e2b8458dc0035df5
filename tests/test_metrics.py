"""Known-answer tests for harness.evaluation.metrics (feature-space sample-quality metrics)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from harness.evaluation import metrics as M
from harness.evaluation.small_sample_noise import small_sample_noise, summarise_noise


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The CI box has 2 cores shared with a training job; oversubscribed OpenMP makes the small
    # matmuls here ~7x slower. Results do not depend on the thread count.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)


def _poly_k(a, b):
    a, b = a.double(), b.double()
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x, y):
    """Bińkowski et al.'s unbiased MMD^2 estimator with the cubic polynomial kernel (as in KID)."""
    m = x.shape[0]
    kxx, kyy, kxy = _poly_k(x, x), _poly_k(y, y), _poly_k(x, y)
    return float(
        (kxx.sum() - kxx.trace() + kyy.sum() - kyy.trace()) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    )


def _exact_moments(n, mean, cov, seed):
    """float64 samples whose SAMPLE mean is exactly `mean` and unbiased SAMPLE covariance is `cov`."""
    d = mean.shape[0]
    z = _randn(n, d, seed=seed, dtype=torch.float64)
    z = z - z.mean(0)
    l0 = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(l0, z.T, upper=False).T  # sample cov = I
    return mean + z @ torch.linalg.cholesky(cov).T


# ------------------------------------------------------------------------------------ distances
def test_pairwise_distances_matches_bruteforce_with_chunking():
    a, b = _randn(7, 3, seed=1), _randn(5, 3, seed=2)
    want = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).sqrt()
    got = M.pairwise_distances(a, b, chunk=3)  # 3 chunks, last one partial
    assert got.shape == (7, 5)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_knn_radii_excludes_self_1d():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(M.knn_radii(x, 1), torch.tensor([1.0, 1.0, 2.0, 4.0]))
    torch.testing.assert_close(M.knn_radii(x, 2), torch.tensor([3.0, 2.0, 3.0, 6.0]))
    torch.testing.assert_close(M.knn_radii(x, 3), torch.tensor([7.0, 6.0, 4.0, 7.0]))
    with pytest.raises(ValueError):
        M.knn_radii(x, 4)  # only 3 other points
    # a duplicate is a genuine neighbour at distance 0; only the point itself is excluded
    dup = torch.tensor([[0.0], [0.0], [5.0]])
    torch.testing.assert_close(M.knn_radii(dup, 1), torch.tensor([0.0, 0.0, 5.0]))


# ------------------------------------------------------------------------------------ identical sets
def test_identical_sets():
    x = _randn(400, 16, seed=3)
    pr = M.precision_recall(x, x.clone(), k=3)
    dc = M.density_coverage(x, x.clone(), k=5)
    assert pr["precision"] == 1.0 and pr["recall"] == 1.0
    assert dc["coverage"] == 1.0
    # every real ball contains its centre and its k neighbours (no ties): density = (k+1)/k
    assert dc["density"] == pytest.approx(6 / 5, abs=1e-12)
    tr = float(torch.cov(x.double().T).trace())
    assert abs(M.fid(x, x.clone())) < 1e-9 * tr


def test_kid_identical_sets_matches_finite_population_expectation():
    """Real and fake subsets are drawn independently from the SAME N points, so they share
    ~m^2/N points; the kernel diagonal then leaks into the cross term and
    E[KID] = -2/N * (mean_i k(x_i,x_i) - mean_{i!=j} k(x_i,x_j))  (small, negative, not 0)."""
    n, subsets, m = 2000, 200, 100
    x = _randn(n, 16, seed=4)
    mean, std = M.kid(x, x.clone(), subsets=subsets, subset_size=m, seed=0)
    k = _poly_k(x, x)
    diag = float(k.diagonal().mean())
    off = float((k.sum() - k.trace()) / (n * (n - 1)))
    expected = -2.0 / n * (diag - off)
    assert expected < 0
    assert abs(mean - expected) < 4 * std / math.sqrt(subsets)
    # tiny compared with even a modest distribution shift
    shifted, _ = M.kid(x, x + 0.5, subsets=subsets, subset_size=m, seed=0)
    assert shifted > 0.1
    assert abs(mean) < 0.02 * shifted


def test_kid_full_subset_equals_unbiased_mmd_by_hand():
    # subset_size == N == M: every subset is a permutation of all samples -> deterministic value
    real, fake = _randn(60, 8, seed=5), _randn(60, 8, seed=6) * 1.3 + 0.2
    mean, std = M.kid(real, fake, subsets=5, subset_size=60, seed=0)
    assert mean == pytest.approx(_mmd2_unbiased(real, fake), rel=1e-4, abs=1e-6)
    assert std == pytest.approx(0.0, abs=1e-6)
    # identical sets, full subsets: 2[(S - tr)/(N(N-1)) - S/N^2] exactly
    mean_id, _ = M.kid(real, real.clone(), subsets=3, subset_size=60, seed=0)
    assert mean_id == pytest.approx(_mmd2_unbiased(real, real), rel=1e-4, abs=1e-6)


# ------------------------------------------------------------------------------------ far apart
def test_far_apart_sets():
    d = 16
    x = _randn(300, d, seed=7)
    y = x + 100.0
    pr = M.precision_recall(x, y, k=3)
    dc = M.density_coverage(x, y, k=5)
    assert pr == {"precision": 0.0, "recall": 0.0}
    assert dc == {"density": 0.0, "coverage": 0.0}
    # same covariance, mean shift 100 in each of d dims -> FID = 100^2 * d
    assert M.fid(x, y) == pytest.approx(100.0**2 * d, rel=1e-6)
    kid_far, _ = M.kid(x, y, subsets=10, subset_size=100, seed=0)
    kid_same, _ = M.kid(x, _randn(300, d, seed=8), subsets=10, subset_size=100, seed=0)
    assert kid_far > 1e6 and kid_far > 1e6 * abs(kid_same)


# ------------------------------------------------------------------------------------ FID
def test_fid_closed_form_diagonal_exact_moments():
    mu1 = torch.tensor([0.0, 1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 1.0, 0.0, -0.5, 3.0, 2.0], dtype=torch.float64)
    s1 = torch.tensor([1.0, 4.0, 0.25, 2.0, 9.0, 1.0], dtype=torch.float64)
    s2 = torch.tensor([4.0, 1.0, 0.25, 0.5, 1.0, 3.0], dtype=torch.float64)
    x = _exact_moments(500, mu1, torch.diag(s1), seed=9)
    y = _exact_moments(700, mu2, torch.diag(s2), seed=10)
    want = float((mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    assert M.fid(x, y) == pytest.approx(want, rel=1e-9)
    # float32 input (the documented feature dtype) is still accurate
    assert M.fid(x.float(), y.float()) == pytest.approx(want, rel=1e-5)


def test_fid_closed_form_non_commuting_2d():
    # For 2x2 SPD A, B: Tr sqrt(A^1/2 B A^1/2) = sqrt(Tr(AB) + 2 sqrt(det A det B))
    a = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    b = torch.tensor([[0.5, -0.3], [-0.3, 3.0]], dtype=torch.float64)
    mu1 = torch.tensor([0.0, 0.0], dtype=torch.float64)
    mu2 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x, y = _exact_moments(400, mu1, a, seed=11), _exact_moments(300, mu2, b, seed=12)
    tr_sqrt = math.sqrt(float((a @ b).trace()) + 2 * math.sqrt(float(torch.det(a) * torch.det(b))))
    want = 5.0 + float(a.trace() + b.trace()) - 2 * tr_sqrt
    assert M.fid(x, y) == pytest.approx(want, rel=1e-9)


def test_fid_large_sample_gaussians_and_torchmetrics_agreement():
    n, d = 20000, 4
    mu2 = torch.tensor([1.0, -1.0, 0.0, 2.0])
    s1 = torch.tensor([1.0, 2.0, 0.5, 1.0])
    s2 = torch.tensor([2.0, 0.5, 0.5, 4.0])
    x = _randn(n, d, seed=13) * s1.sqrt()
    y = _randn(n, d, seed=14) * s2.sqrt() + mu2
    want = float(mu2.square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    assert M.fid(x, y) == pytest.approx(want, rel=0.02)
    # same value as torchmetrics' FID (identity extractor) on well-conditioned float64 features
    from torchmetrics.image.fid import FrechetInceptionDistance

    a = _randn(500, 5, seed=15, dtype=torch.float64)
    mix = _randn(5, 5, seed=17, dtype=torch.float64)  # non-diagonal fake covariance
    b = _randn(400, 5, seed=16, dtype=torch.float64) @ mix + 0.3
    tm = FrechetInceptionDistance(feature=M._IdentityFeatures(5))
    tm.update(a, real=True)
    tm.update(b, real=False)
    assert M.fid(a, b) == pytest.approx(float(tm.compute()), rel=1e-6)


# ------------------------------------------------------------------------------------ PR asymmetry
def _two_modes(seed):
    a = _randn(300, 2, seed=seed)
    b = _randn(300, 2, seed=seed + 1) + 10.0
    return a, b


def test_precision_recall_mode_dropping_subset():
    a, b = _two_modes(20)
    real = torch.cat([a, b])
    fake = a[:200]  # real points from mode A only
    pr = M.precision_recall(real, fake, k=3)
    dc = M.density_coverage(real, fake, k=5)
    assert pr["precision"] == 1.0  # every fake point is a real point
    assert 200 / 600 <= pr["recall"] <= 0.5  # mode B (half the real set) is not covered
    assert 200 / 600 <= dc["coverage"] <= 0.5


def test_precision_recall_mode_dropping_fresh_samples():
    a, b = _two_modes(22)
    real = torch.cat([a, b])
    fake = _randn(300, 2, seed=99)  # fresh draws from mode A only
    pr = M.precision_recall(real, fake, k=3)
    assert pr["precision"] > 0.9
    assert pr["recall"] < 0.55
    # and the converse: fake spans both modes, real only one -> low precision, high recall
    pr_rev = M.precision_recall(fake, real, k=3)
    assert pr_rev["precision"] < 0.55 and pr_rev["recall"] > 0.9


def test_density_coverage_same_distribution_expectations():
    """Naeem et al. 2020: for fake ~ real, E[density] = 1 and
    E[coverage] = 1 - prod_{i=1..k} (N - i) / (N + M - i)."""
    n = m = 2000
    k = 5
    dc = M.density_coverage(_randn(n, 8, seed=30), _randn(m, 8, seed=31), k=k)
    want_cov = 1 - math.prod((n - i) / (n + m - i) for i in range(1, k + 1))
    assert dc["density"] == pytest.approx(1.0, abs=0.05)
    assert dc["coverage"] == pytest.approx(want_cov, abs=0.015)


# ------------------------------------------------------------------------------------ classes
def test_class_histogram_coverage_entropy():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 19 + [3] * 1)
    h = M.class_histogram(labels)
    assert h.shape == (10,)
    torch.testing.assert_close(h, torch.tensor([0.5, 0.3, 0.19, 0.01, 0, 0, 0, 0, 0, 0], dtype=h.dtype))
    assert float(h.sum()) == pytest.approx(1.0)
    assert M.class_coverage(h) == 4  # 1% exactly counts
    assert M.class_coverage(h, min_fraction=0.02) == 3
    want = -sum(p * math.log(p) for p in (0.5, 0.3, 0.19, 0.01)) / math.log(10)
    assert M.class_entropy(h) == pytest.approx(want)

    uniform = M.class_histogram(torch.arange(10).repeat(7))
    assert M.class_coverage(uniform) == 10
    assert M.class_entropy(uniform) == pytest.approx(1.0)
    single = M.class_histogram(torch.full((40,), 7))
    assert M.class_coverage(single) == 1
    assert M.class_entropy(single) == 0.0
    half = M.class_histogram(torch.tensor([2, 5] * 10))
    assert M.class_entropy(half) == pytest.approx(math.log(2) / math.log(10))
    with pytest.raises(ValueError):
        M.class_histogram(torch.tensor([0, 10]))


# ------------------------------------------------------------------------------------ compute_all
def test_compute_all_keys_types_and_consistency():
    real, fake = _randn(300, 8, seed=40), _randn(200, 8, seed=41) * 1.2
    base = {"precision", "recall", "density", "coverage", "kid", "kid_std", "fid", "n_samples", "n_real"}
    out = M.compute_all(real, fake, seed=1, kid_subsets=5, kid_subset_size=1000)  # subset clamped to 200
    assert set(out) == base
    assert out["n_samples"] == 200 and out["n_real"] == 300
    assert type(out["n_samples"]) is int and type(out["n_real"]) is int
    assert all(type(out[k]) is float for k in base - {"n_samples", "n_real"})
    json.dumps(out)
    assert out["precision"] == M.precision_recall(real, fake, k=3)["precision"]
    assert out["recall"] == M.precision_recall(real, fake, k=3)["recall"]
    assert out["density"] == pytest.approx(M.density_coverage(real, fake, k=5)["density"])
    assert out["coverage"] == M.density_coverage(real, fake, k=5)["coverage"]
    assert (out["kid"], out["kid_std"]) == M.kid(real, fake, subsets=5, subset_size=200, seed=1)
    assert out["fid"] == pytest.approx(M.fid(real, fake))

    pred = torch.tensor([0] * 150 + [1] * 49 + [2] * 1)
    out2 = M.compute_all(real, fake, fake_class_pred=pred, seed=1, kid_subsets=5)
    assert set(out2) == base | {"class_coverage", "class_entropy", "class_hist"}
    assert out2["class_coverage"] == 2 and type(out2["class_coverage"]) is int
    assert type(out2["class_entropy"]) is float and 0 < out2["class_entropy"] < 1
    assert len(out2["class_hist"]) == 10 and all(type(v) is float for v in out2["class_hist"])
    assert out2["class_hist"][:3] == pytest.approx([0.75, 0.245, 0.005])
    json.dumps(out2)


# ------------------------------------------------------------------------------------ determinism
def test_kid_deterministic_seeded_and_leaves_global_rng_alone():
    real, fake = _randn(500, 8, seed=50), _randn(400, 8, seed=51) + 0.1
    state = torch.get_rng_state()
    a = M.kid(real, fake, subsets=20, subset_size=100, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)  # perturb the global RNG: must not matter
    b = M.kid(real, fake, subsets=20, subset_size=100, seed=3)
    c = M.kid(real, fake, subsets=20, subset_size=100, seed=4)
    assert a == b
    assert a != c
    # subset_size is clamped to min(N, M)
    assert M.kid(real[:80], fake[:60], subsets=4, subset_size=1000, seed=0) == M.kid(
        real[:80], fake[:60], subsets=4, subset_size=60, seed=0
    )


# ------------------------------------------------------------------------------------ small-sample noise
def test_small_sample_noise_rows_and_shrinking_noise():
    real, fake = _randn(2000, 16, seed=60), _randn(2000, 16, seed=61) * 1.1
    df100 = small_sample_noise(real, fake, n=100, repeats=12, seed=0)
    assert isinstance(df100, pd.DataFrame)
    assert list(df100.columns) == ["repeat", "n", "precision", "recall", "kid"]
    assert len(df100) == 12 and list(df100["repeat"]) == list(range(12)) and (df100["n"] == 100).all()
    assert df100[["precision", "recall"]].stack().between(0, 1).all()
    df500 = small_sample_noise(real, fake, n=500, repeats=12, seed=0)
    assert len(df500) == 12
    assert df100["kid"].std() > 2 * df500["kid"].std()
    # reproducible
    pd.testing.assert_frame_equal(df100, small_sample_noise(real, fake, n=100, repeats=12, seed=0))
    assert not df100.equals(small_sample_noise(real, fake, n=100, repeats=12, seed=1))

    s = summarise_noise(df100)
    assert s["repeats"] == 12 and s["n"] == 100
    for col in ("precision", "recall", "kid"):
        assert set(s[col]) == {"mean", "std", "min", "max"}
        assert s[col]["mean"] == pytest.approx(df100[col].mean())
        assert s[col]["std"] == pytest.approx(df100[col].std(ddof=1))
        assert s[col]["min"] <= s[col]["mean"] <= s[col]["max"]
    json.dumps(s)
    with pytest.raises(ValueError):
        small_sample_noise(real[:50], fake, n=100)


def test_input_validation():
    with pytest.raises(ValueError):
        M.precision_recall(_randn(20, 3), _randn(20, 4))
    with pytest.raises(ValueError):
        M.precision_recall(_randn(3, 3), _randn(20, 3), k=3)  # needs N_real >= k+1
    with pytest.raises(ValueError):
        M.pairwise_distances(_randn(5), _randn(5, 1))
