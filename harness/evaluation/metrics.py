# Sample-quality metrics on pre-computed FEATURE tensors (float32, shape (N, D)).
#
# Papers implemented:
#   * Improved precision / recall  -- Kynkäänniemi et al., "Improved Precision and Recall Metric for
#     Assessing Generative Models", NeurIPS 2019 (k-NN manifold estimate, closed balls, default k=3).
#   * Density / coverage            -- Naeem et al., "Reliable Fidelity and Diversity Metrics for
#     Generative Models", ICML 2020 (default k=5).
#   * KID                           -- Bińkowski et al., "Demystifying MMD GANs", ICLR 2018: unbiased
#     MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets
#     (computed by torchmetrics' KernelInceptionDistance fed with an identity "extractor").
#   * FID                           -- Heusel et al., "GANs Trained by a Two Time-Scale Update Rule
#     Converge to a Local Nash Equilibrium", NeurIPS 2017: Fréchet distance between Gaussians fitted
#     to the two feature sets, ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}), in float64.
#
# Symbols: `real` = features of real (data) samples, X = {x_i}, N of them; `fake` = features of
# generated samples, Y = {y_j}, M of them; D = feature dimension; k = neighbour rank;
# NND_k(x_i) = distance from x_i to its k-th nearest neighbour in its own set (itself excluded);
# B(x, r) = closed Euclidean ball. The features themselves (a FashionMNIST classifier's
# penultimate layer) are produced elsewhere; nothing here touches images.
#
# Determinism: every random choice is driven by a `seed` argument through a local
# torch.Generator, except torchmetrics' KID subset sampling, which uses the global RNG and is
# therefore run inside torch.random.fork_rng() so the caller's global RNG state is untouched.
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "pairwise_distances",
    "knn_radii",
    "precision_recall",
    "density_coverage",
    "kid",
    "fid",
    "class_histogram",
    "class_coverage",
    "class_entropy",
    "class_tv",
    "max_class_share",
    "poly_kernel",
    "kernel_sums",
    "mmd2_unbiased",
    "real_knn_distances",
    "compute_all",
]

_CHUNK = 2048


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def as_features(x: Any, name: str = "features") -> Tensor:
    """Detached, CPU, contiguous float32 (N, D) tensor."""
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape (N, D), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return t.to(torch.float32).contiguous()


def check_same_dim(real: Tensor, fake: Tensor) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: real D={real.shape[1]}, fake D={fake.shape[1]}")


def _center(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Translate both sets by the real mean. Distances are unchanged, but torch.cdist's
    ||a||^2 + ||b||^2 - 2 a.b formulation loses much less precision on centred data."""
    mu = real.mean(dim=0, keepdim=True)
    return real - mu, fake - mu


def _knn_radii_raw(feats: Tensor, k: int, chunk: int = _CHUNK) -> Tensor:
    n = feats.shape[0]
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got k={k}")
    out = torch.empty(n, dtype=feats.dtype)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        d = torch.cdist(feats[s:e], feats)
        idx = torch.arange(s, e)
        d[idx - s, idx] = float("inf")  # exclude the point itself (by index, so duplicates still count)
        out[s:e] = d.topk(k, dim=1, largest=False).values[:, k - 1]
    return out


# --------------------------------------------------------------------------------------------
# distances
# --------------------------------------------------------------------------------------------
def pairwise_distances(a: Tensor, b: Tensor, chunk: int = _CHUNK) -> Tensor:
    """Euclidean distance matrix (len(a), len(b)), computed `chunk` rows of `a` at a time."""
    a = as_features(a, "a")
    b = as_features(b, "b")
    check_same_dim(a, b)
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    return torch.cat([torch.cdist(a[s : s + chunk], b) for s in range(0, a.shape[0], chunk)], dim=0)


def knn_radii(feats: Tensor, k: int) -> Tensor:
    """NND_k: distance from each point to its k-th nearest neighbour within `feats`, the point
    itself excluded (by index; an exact duplicate of a point does count as a neighbour)."""
    f = as_features(feats)
    return _knn_radii_raw(f - f.mean(dim=0, keepdim=True), k)


# --------------------------------------------------------------------------------------------
# k-NN manifold metrics
# --------------------------------------------------------------------------------------------
def real_knn_distances(real: Tensor, kmax: int, chunk: int = _CHUNK) -> Tensor:
    """(N, kmax): distances from each real point to its 1st..kmax-th nearest real neighbour (itself excluded),
    computed on real-mean-centred features exactly as _prdc does. Depends on the real set only, so a caller
    scoring many fake sets against one real set (harness.evaluation.scoring.Reference) computes it once."""
    real = as_features(real, "real")
    real = real - real.mean(dim=0, keepdim=True)
    n = real.shape[0]
    if not 1 <= kmax <= n - 1:
        raise ValueError(f"k must be in [1, N_real-1] = [1, {n - 1}], got k={kmax}")
    real_knn = torch.empty(n, kmax)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        d = torch.cdist(real[s:e], real)
        idx = torch.arange(s, e)
        d[idx - s, idx] = float("inf")
        real_knn[s:e] = d.topk(kmax, dim=1, largest=False).values
    return real_knn


def _prdc(real: Tensor, fake: Tensor, k_pr: int | None, k_dc: int | None, chunk: int = _CHUNK) -> dict:
    """One pass over the (real x fake) distance matrix, `chunk` real rows at a time.

    Rows are real points and the row chunks are the same as in _knn_radii_raw(real), so when
    fake == real the cross distances are bit-identical to those the radii were taken from
    (ties at the k-th neighbour are then counted consistently)."""
    real = as_features(real, "real")
    fake = as_features(fake, "fake")
    check_same_dim(real, fake)
    kmax = max(k for k in (k_pr, k_dc) if k is not None)  # one top-k pass over real-real distances serves both k's
    real_knn = real_knn_distances(real, kmax, chunk)
    real, fake = _center(real, fake)
    n, m = real.shape[0], fake.shape[0]
    r_pr = real_knn[:, k_pr - 1] if k_pr is not None else None
    r_dc = real_knn[:, k_dc - 1] if k_dc is not None else None
    r_fake = _knn_radii_raw(fake, k_pr, chunk) if k_pr is not None else None

    fake_in_real = torch.zeros(m, dtype=torch.bool)  # precision
    real_in_fake = torch.zeros(n, dtype=torch.bool)  # recall
    density_count = torch.zeros(m, dtype=torch.float64)  # density
    real_covered = torch.zeros(n, dtype=torch.bool)  # coverage
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        d = torch.cdist(real[s:e], fake)  # (chunk, m)
        if k_pr is not None:
            fake_in_real |= (d <= r_pr[s:e, None]).any(dim=0)
            real_in_fake[s:e] = (d <= r_fake[None, :]).any(dim=1)
        if k_dc is not None:
            inside = d <= r_dc[s:e, None]
            density_count += inside.sum(dim=0, dtype=torch.float64)
            real_covered[s:e] = d.min(dim=1).values <= r_dc[s:e]
    out = {}
    if k_pr is not None:
        out["precision"] = float(fake_in_real.double().mean())
        out["recall"] = float(real_in_fake.double().mean())
    if k_dc is not None:
        out["density"] = float(density_count.mean() / k_dc)
        out["coverage"] = float(real_covered.double().mean())
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict:
    """Improved precision/recall (Kynkäänniemi et al. 2019).

    precision = (1/M) sum_j 1[ exists i: ||y_j - x_i|| <= NND_k(x_i) ]  (fake inside real manifold)
    recall    = (1/N) sum_i 1[ exists j: ||x_i - y_j|| <= NND_k(y_j) ]  (real inside fake manifold)
    Needs k <= min(N, M) - 1."""
    return _prdc(real, fake, k_pr=k, k_dc=None)


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict:
    """Density/coverage (Naeem et al. 2020); both manifolds are built from REAL samples only.

    density  = 1/(k M) sum_j sum_i 1[ ||y_j - x_i|| <= NND_k(x_i) ]   (unbounded; ~1 if fake ~ real,
               exactly (k+1)/k when fake == real and there are no distance ties)
    coverage = (1/N) sum_i 1[ min_j ||x_i - y_j|| <= NND_k(x_i) ]."""
    return _prdc(real, fake, k_pr=None, k_dc=k)


# --------------------------------------------------------------------------------------------
# KID / FID
# --------------------------------------------------------------------------------------------
class _IdentityFeatures(nn.Module):
    """Identity "feature extractor" so torchmetrics' image metrics accept pre-computed features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        return x


def kid(real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance via torchmetrics.image.kid.KernelInceptionDistance on features.

    Returns (mean, std) over `subsets` random subsets (std is torchmetrics' population std).
    subset_size is clamped to min(N, M). Note the unbiased MMD^2 estimator is permutation
    invariant, so when subset_size == N == M every subset gives the same value (std = 0).
    The estimator can be slightly negative when the two distributions are equal."""
    real = as_features(real, "real")
    fake = as_features(fake, "fake")
    check_same_dim(real, fake)
    size = int(min(subset_size, real.shape[0], fake.shape[0]))
    if size < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    # imported here, not at the top: torchmetrics takes seconds to import, and the runs that never score KID this
    # way (the toy, the report, every spawned study worker until it scores) should not pay for it
    from torchmetrics.image.kid import KernelInceptionDistance

    with warnings.catch_warnings():  # "will save all extracted features in buffer": expected here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=_IdentityFeatures(real.shape[1]), subsets=int(subsets), subset_size=size, reset_real_features=True
        )
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """KID's cubic polynomial kernel k(x, y) = (x.y / D + 1)^3: the dot products in float32 (relative error ~1e-7,
    far below the metric's sampling noise), the cube in float64."""
    return (a.float() @ b.float().T / a.shape[1] + 1).double() ** 3


def kernel_sums(a: Tensor, b: Tensor | None = None, chunk: int = _CHUNK) -> Tensor:
    """Row sums of k(a, b) over b (b = a: the diagonal k(a_i, a_i) excluded), chunked; float64 (len(a),)."""
    a = as_features(a, "a")
    other = a if b is None else as_features(b, "b")
    out = torch.empty(len(a), dtype=torch.float64)
    for s in range(0, len(a), chunk):
        k = poly_kernel(a[s : s + chunk], other)
        if b is None:
            idx = torch.arange(s, min(s + chunk, len(a)))
            k[idx - s, idx] = 0.0
        out[s : s + chunk] = k.sum(1)
    return out


def mmd2_unbiased(k_rr_mean: float, k_ff: Tensor, k_fr_rowsum: Tensor, n_real: int, subset: Tensor | None = None) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) from kernel pieces: k_rr_mean = mean of k(x_i, x_j) over real
    pairs i != j; k_ff = the (m, m) fake-fake kernel matrix (its diagonal ignored); k_fr_rowsum[j] = sum_i k(y_j, x_i).
        MMD^2_u = mean_{j != l} k(y_j, y_l) + k_rr_mean - 2 mean_{i, j} k(x_i, y_j).
    ``subset`` (indices into the fake set): the same estimate on those fake samples only, as a quadratic form
    (no sub-matrix copy). With one subset equal to the whole sets this is exactly the value torchmetrics' KID
    averages over its subsets."""
    if subset is None:
        w = torch.ones(k_ff.shape[0], dtype=torch.float64)
    else:
        w = torch.zeros(k_ff.shape[0], dtype=torch.float64)
        w[subset] = 1.0
    m = float(w.sum())
    if m < 2:
        raise ValueError("KID needs at least 2 fake samples")
    k_ff_sum = w @ (k_ff @ w) - (w * k_ff.diagonal()).sum()
    return float(k_ff_sum / (m * (m - 1)) + k_rr_mean - 2 * (w * k_fr_rowsum).sum() / (m * n_real))


def fid(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between N(mu_r, S_r) and N(mu_f, S_f) fitted to the features (float64,
    unbiased covariances as in pytorch-fid/torchmetrics):
        ||mu_r - mu_f||^2 + Tr(S_r) + Tr(S_f) - 2 Tr((S_r^{1/2} S_f S_r^{1/2})^{1/2}).
    The last trace is taken from the eigenvalues of the symmetric PSD matrix
    S_r^{1/2} S_f S_r^{1/2} (negative round-off eigenvalues clamped to 0). Unlike torchmetrics'
    FID, covariances are computed from centred data, so large feature offsets do not cancel."""
    r = torch.as_tensor(real).detach().cpu().to(torch.float64)
    f = torch.as_tensor(fake).detach().cpu().to(torch.float64)
    if r.dim() != 2 or f.dim() != 2:
        raise ValueError("features must have shape (N, D)")
    check_same_dim(r, f)
    if r.shape[0] < 2 or f.shape[0] < 2:
        raise ValueError("FID needs at least 2 samples in each set")
    mu_r, mu_f = r.mean(0), f.mean(0)
    rc, fc = r - mu_r, f - mu_f
    s_r = rc.T @ rc / (r.shape[0] - 1)
    s_f = fc.T @ fc / (f.shape[0] - 1)
    evals, evecs = torch.linalg.eigh(s_r)
    sqrt_s_r = (evecs * evals.clamp_min(0).sqrt()) @ evecs.T
    mid = sqrt_s_r @ s_f @ sqrt_s_r
    mid = (mid + mid.T) / 2
    tr_sqrt = torch.linalg.eigvalsh(mid).clamp_min(0).sqrt().sum()
    value = (mu_r - mu_f).square().sum() + s_r.trace() + s_f.trace() - 2 * tr_sqrt
    return float(value)


# --------------------------------------------------------------------------------------------
# class statistics (from a classifier's predicted labels on fake samples)
# --------------------------------------------------------------------------------------------
def class_histogram(labels_pred: Tensor, num_classes: int = 10) -> Tensor:
    """Fraction of samples predicted as each class (float64, sums to 1)."""
    labels = torch.as_tensor(labels_pred).detach().cpu().reshape(-1).long()
    if labels.numel() == 0:
        raise ValueError("labels_pred is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    return counts / counts.sum()


def class_coverage(hist: Tensor, min_fraction: float = 0.01) -> int:
    """Number of classes receiving at least `min_fraction` of the samples."""
    h = torch.as_tensor(hist, dtype=torch.float64)
    return int((h >= min_fraction).sum())


def class_tv(hist: Tensor, reference_hist: Tensor) -> float:
    """Total variation distance 1/2 sum_c |p_c - q_c| between two class histograms, in [0, 1]: 0 = the same class
    balance; 0.15 = 15% of the samples would have to change class to match the reference."""
    p = torch.as_tensor(hist, dtype=torch.float64).reshape(-1)
    q = torch.as_tensor(reference_hist, dtype=torch.float64).reshape(-1)
    if p.shape != q.shape:
        raise ValueError(f"histograms differ in length: {p.numel()} vs {q.numel()}")
    return float(0.5 * (p / p.sum() - q / q.sum()).abs().sum())


def max_class_share(hist: Tensor) -> float:
    """Share of the samples in the most frequent class (0.1 for a balanced 10-class set; 1 = one class only)."""
    h = torch.as_tensor(hist, dtype=torch.float64).reshape(-1)
    return float(h.max() / h.sum())


def class_entropy(hist: Tensor) -> float:
    """Normalised Shannon entropy H(p) / log(K) in [0, 1]; 1 = uniform, 0 = single class."""
    h = torch.as_tensor(hist, dtype=torch.float64).reshape(-1)
    k = h.numel()
    if k < 2:
        return 0.0
    p = h / h.sum()
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum() / math.log(k))


# --------------------------------------------------------------------------------------------
# everything at once
# --------------------------------------------------------------------------------------------
def compute_all(
    real_feats: Tensor,
    fake_feats: Tensor,
    fake_class_pred: Tensor | None = None,
    seed: int = 0,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict:
    """All metrics as plain Python floats/ints (JSON-serialisable).

    Keys: precision, recall (k=3), density, coverage (k=5), kid, kid_std, fid, n_samples (fake),
    n_real; with fake_class_pred also class_coverage (classes with >= 1% share), class_entropy,
    class_hist (list of 10 floats)."""
    real = as_features(real_feats, "real_feats")
    fake = as_features(fake_feats, "fake_feats")
    check_same_dim(real, fake)
    out: dict[str, Any] = {}
    out.update(_prdc(real, fake, k_pr=3, k_dc=5))
    kid_mean, kid_std = kid(real, fake, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    out["kid"] = kid_mean
    out["kid_std"] = kid_std
    out["fid"] = fid(real, fake)
    out["n_samples"] = int(fake.shape[0])
    out["n_real"] = int(real.shape[0])
    if fake_class_pred is not None:
        hist = class_histogram(fake_class_pred, num_classes=10)
        out["class_coverage"] = class_coverage(hist, 0.01)
        out["class_entropy"] = class_entropy(hist)
        out["class_hist"] = [float(v) for v in hist]
    return out
