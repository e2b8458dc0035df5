"""Scoring generated images: the metric registry, every feature space, and intervals of a single evaluation.

* ``METRICS`` is the one registry of image metrics: its function, its direction, its display name and unit,
  its group (fidelity / diversity / distance) and whether it enters the verdict. Loops, studies, tables and
  plots read it; adding a metric is one ``register`` call.
* Every metric is computed in every feature space of ``harness.evaluation.feature_spaces`` against that space's features
  of the 10,000 test images. Flat keys are ``<metric>_<space>`` (``kid_vgg``, ``recall_resnet``).
* An ``Evaluation`` holds the values on n samples and the same metrics on ``HALF_SAMPLES`` half-samples (n/2
  samples drawn without replacement, the same index sets for every evaluation of that n). Half-sampling
  (McCarthy 1969; the delete-n/2 jackknife) estimates the variance of a statistic at n by the spread of the
  statistic over half-samples, with no duplicated points (a bootstrap's duplicates would corrupt the k-NN
  metrics). Two evaluations of the same latents (start vs final of a run, or two variants at one seed) are
  paired half-sample by half-sample, which gives the interval of their difference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from harness.testbed import assets
from harness.evaluation import feature_spaces, metrics

HALF_SAMPLES = 20
Z95 = 1.959963984540054


# ----------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # what the number is measured in (shown in every header)
    lower_is_better: bool
    in_verdict: bool
    group: str  # fidelity | diversity | distance
    fn: Callable[["ScoredSet"], float]
    fmt: str = ".4g"

    def header(self, space: str | None = None) -> str:
        where = f", {space} features" if space else ""
        return f"{self.label} ({self.unit}{where})" if self.unit else f"{self.label}{f' ({space})' if space else ''}"


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    METRICS[metric.key] = metric
    return metric


register(Metric("kid", "KID", "MMD², raw", True, True, "distance", lambda s: s.kid, ".4g"))
register(Metric("fid", "FID", "raw", True, True, "distance", lambda s: s.fid, ".4g"))
register(Metric("precision", "precision", "", False, True, "fidelity", lambda s: s.prdc["precision"], ".3f"))
register(Metric("density", "density", "", False, False, "fidelity", lambda s: s.prdc["density"], ".3f"))
register(Metric("recall", "recall", "", False, True, "diversity", lambda s: s.prdc["recall"], ".3f"))
register(Metric("coverage", "coverage", "", False, False, "diversity", lambda s: s.prdc["coverage"], ".3f"))
register(Metric("class_tv", "class TV", "total variation to the test classes", True, True, "diversity",
                lambda s: metrics.class_tv(s.class_hist, s.ref.class_hist), ".3f"))
register(Metric("max_class_share", "max class share", "", True, False, "diversity",
                lambda s: metrics.max_class_share(s.class_hist), ".3f"))


def verdict_metrics() -> list[str]:
    return [k for k, m in METRICS.items() if m.in_verdict]


def key(metric: str, space: str) -> str:
    return f"{metric}_{space}"


def split_key(flat: str) -> tuple[str, str]:
    """'class_tv_resnet' -> ('class_tv', 'resnet')."""
    metric, _, space = flat.rpartition("_")
    if metric not in METRICS or space not in feature_spaces.FEATURE_SPACES:
        raise KeyError(f"not a metric key: {flat!r}")
    return metric, space


def is_metric_key(flat: str) -> bool:
    try:
        split_key(flat)
        return True
    except KeyError:
        return False


# ----------------------------------------------------------------------------------------------
# One feature space's reference set, and a scored set of generated samples


class Reference:
    """The test split in one feature space, with what every scoring against it reuses (computed once)."""

    def __init__(self, space: str, features: torch.Tensor, labels: torch.Tensor, network: torch.nn.Module | None = None):
        self.space, self.network = space, network
        self.features = features.float().contiguous()
        self.labels = labels
        self.class_hist = metrics.class_histogram(labels, 10)

    @functools.cached_property
    def real_knn(self) -> torch.Tensor:
        return metrics.real_knn_distances(self.features, 5)

    @functools.cached_property
    def k_rr_mean(self) -> float:
        n = len(self.features)
        return float(metrics.kernel_sums(self.features).sum() / (n * (n - 1)))

    def score(self, feats: torch.Tensor, preds: torch.Tensor) -> "ScoredSet":
        return ScoredSet(self, feats, preds)


class ScoredSet:
    """Generated samples' features and predicted classes in one space; metric pieces computed lazily, once.
    A half-sample (``parent``, ``idx``) reuses its parent's fake-fake kernel and fake-real kernel sums."""

    def __init__(self, ref: Reference, feats: torch.Tensor, preds: torch.Tensor, parent: "ScoredSet | None" = None,
                 idx: torch.Tensor | None = None):
        self.ref, self.feats, self.preds, self.parent, self.idx = ref, feats.float().contiguous(), preds, parent, idx

    # Precision/recall (k=3) and density/coverage (k=5) exactly as metrics._prdc computes them, arranged so that
    # a half-sample slices its parent's real x fake distance matrix instead of recomputing it.
    @functools.cached_property
    def _dist(self) -> torch.Tensor:
        """(N_real, m) distances between real-mean-centred features (the same centring as metrics._prdc)."""
        if self.parent is not None:
            return self.parent._dist[:, self.idx]
        mu = self.ref.features.mean(dim=0, keepdim=True)
        real, fake = self.ref.features - mu, self.feats - mu
        return torch.cat([torch.cdist(real[s : s + 2048], fake) for s in range(0, len(real), 2048)])

    @functools.cached_property
    def _per_fake(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per generated sample: inside the real k=3 manifold (precision), and how many real k=5 balls hold it
        (density). Neither depends on the other generated samples, so a half-sample takes its parent's."""
        if self.parent is not None:
            inside, count = self.parent._per_fake
            return inside[self.idx], count[self.idx]
        d = self._dist
        return (d <= self.ref.real_knn[:, 2:3]).any(dim=0), (d <= self.ref.real_knn[:, 4:5]).sum(dim=0, dtype=torch.float64)

    @functools.cached_property
    def prdc(self) -> dict:
        d, (inside, count) = self._dist, self._per_fake
        fake = self.feats - self.ref.features.mean(dim=0, keepdim=True)
        r_fake = metrics._knn_radii_raw(fake, 3)
        return {"precision": float(inside.double().mean()), "recall": float((d <= r_fake[None, :]).any(dim=1).double().mean()),
                "density": float(count.mean() / 5), "coverage": float((d.min(dim=1).values <= self.ref.real_knn[:, 4]).double().mean())}

    @functools.cached_property
    def _kernels(self) -> tuple[torch.Tensor, torch.Tensor]:
        return metrics.poly_kernel(self.feats, self.feats), metrics.kernel_sums(self.feats, self.ref.features)

    @property
    def kid(self) -> float:
        """Unbiased MMD² with KID's cubic kernel, on all the samples against all 10,000 test images."""
        if self.parent is not None:
            k_ff, rowsum = self.parent._kernels
            return metrics.mmd2_unbiased(self.ref.k_rr_mean, k_ff, rowsum, len(self.ref.features), subset=self.idx)
        k_ff, rowsum = self._kernels
        return metrics.mmd2_unbiased(self.ref.k_rr_mean, k_ff, rowsum, len(self.ref.features))

    @property
    def fid(self) -> float:
        return metrics.fid(self.ref.features, self.feats)

    @functools.cached_property
    def class_hist(self) -> torch.Tensor:
        return metrics.class_histogram(self.preds, 10)

    def half(self, idx: torch.Tensor) -> "ScoredSet":
        return ScoredSet(self.ref, self.feats[idx], self.preds[idx], parent=self, idx=idx)

    def values(self) -> dict[str, float]:
        return {k: float(m.fn(self)) for k, m in METRICS.items()}


@functools.lru_cache(maxsize=8)
def _reference(space: str, directory: str | None) -> Reference:
    sp = feature_spaces.get(space)
    # Building the classifier draws its initial weights from the global RNG before they are overwritten; only
    # the first call in a process builds it (the cache), so without the fork a run's training stream depended
    # on whether an earlier run in the same study worker had filled the cache.
    with torch.random.fork_rng(devices=[]):
        network, _ = assets.load_network(sp.network_asset, directory)
    bank = assets.load_raw(sp.bank_asset, directory)["state_dict"]
    return Reference(space, bank["features"], bank["labels"], network.eval())


def references(asset_dir=None, spaces: tuple[str, ...] | None = None) -> dict[str, Reference]:
    """Every shipped feature space's reference (cached per process: the real k-NN radii and kernel sums are
    computed once)."""
    names = spaces or tuple(feature_spaces.FEATURE_SPACES)
    return {s: _reference(s, str(asset_dir) if asset_dir else None) for s in names}


def required_assets() -> list[str]:
    return [a for sp in feature_spaces.FEATURE_SPACES.values() for a in (sp.network_asset, sp.bank_asset)]


# ----------------------------------------------------------------------------------------------
# Evaluations with half-sample intervals


def half_sample_indices(n: int, count: int = HALF_SAMPLES, seed: int = 0) -> list[torch.Tensor]:
    """``count`` index sets of n // 2 samples without replacement; fixed by (n, seed) so evaluations of the same
    n share them and can be paired."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=g)[: n // 2] for _ in range(count)]


@dataclass
class Evaluation:
    """Metric values of one sample set in every space (``values``: flat keys), and the same metrics on each
    half-sample (``halves``: flat key -> list). ``n``: samples scored. ``class_hists``: space -> the share of each
    of the 10 classes the space's classifier assigns the samples (what class TV and max class share summarise)."""

    n: int
    values: dict[str, float]
    halves: dict[str, list[float]] = field(default_factory=dict)
    class_hists: dict[str, list[float]] = field(default_factory=dict)

    def sd(self, k: str) -> float:
        """Half-sampling estimate of the standard deviation of ``values[k]`` at this n."""
        h = self.halves.get(k) or []
        if len(h) < 2:
            return float("nan")
        mean = sum(h) / len(h)
        return math.sqrt(sum((v - mean) ** 2 for v in h) / len(h))

    def interval(self, k: str) -> tuple[float, float]:
        half_width = Z95 * self.sd(k)
        return self.values[k] - half_width, self.values[k] + half_width

    def to_dict(self) -> dict:
        d = {"n": self.n, "values": self.values, "halves": self.halves}
        return {**d, "class_hists": self.class_hists} if self.class_hists else d

    @classmethod
    def from_dict(cls, d: dict | None) -> "Evaluation | None":
        if not d:
            return None
        return cls(n=int(d["n"]), values=dict(d["values"]), halves={k: list(v) for k, v in (d.get("halves") or {}).items()},
                   class_hists={k: list(v) for k, v in (d.get("class_hists") or {}).items()})


def paired_difference(a: Evaluation, b: Evaluation, k: str) -> tuple[float, float, float]:
    """(a - b, lo, hi) for metric key k: the 95% interval from the paired half-samples (the same index sets;
    meaningful when a and b scored the same latents). NaN bounds when the halves are missing."""
    delta = a.values[k] - b.values[k]
    ha, hb = a.halves.get(k) or [], b.halves.get(k) or []
    if len(ha) < 2 or len(ha) != len(hb):
        return delta, float("nan"), float("nan")
    d = [x - y for x, y in zip(ha, hb)]
    mean = sum(d) / len(d)
    half_width = Z95 * math.sqrt(sum((v - mean) ** 2 for v in d) / len(d))
    return delta, delta - half_width, delta + half_width


def featurise_all(images: torch.Tensor, refs: dict[str, Reference]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from harness.evaluation.sampling import featurise

    return {space: featurise(ref.network, images) for space, ref in refs.items()}


def evaluate_features(feats: dict[str, tuple[torch.Tensor, torch.Tensor]], refs: dict[str, Reference],
                      half_samples: int = HALF_SAMPLES) -> Evaluation:
    """Every registered metric in every space; with ``half_samples`` > 0 also on that many half-samples."""
    n = len(next(iter(feats.values()))[0])
    values, halves, hists = {}, {}, {}
    idx_sets = half_sample_indices(n, half_samples) if half_samples else []
    for space, (f, p) in feats.items():
        scored = refs[space].score(f, p)
        values.update({key(m, space): v for m, v in scored.values().items()})
        hists[space] = [float(v) for v in scored.class_hist]
        for idx in idx_sets:
            for m, v in scored.half(idx).values().items():
                halves.setdefault(key(m, space), []).append(v)
    return Evaluation(n=n, values=values, halves=halves, class_hists=hists)


def evaluate_images(images: torch.Tensor, refs: dict[str, Reference] | None = None, half_samples: int = HALF_SAMPLES,
                    asset_dir=None) -> Evaluation:
    refs = refs or references(asset_dir)
    with torch.no_grad():
        return evaluate_features(featurise_all(images.clamp(-1, 1), refs), refs, half_samples)
