"""Intervals and verdicts: when is a change a change?

* Over seeds: mean and 95% Student-t interval, ``mean ± t(0.975, n-1) * sd / sqrt(n)``.
* A paired change (variant - baseline, same seed, same evaluation latents) is **significant** when its 95%
  interval excludes 0: with >= 2 seeds the t-interval of the per-seed differences; with one seed the run's own
  paired half-sample interval (evaluation noise only, labelled ``1 seed``).
* Verdict in one feature space, over the metrics that enter it (``scoring.verdict_metrics()``: KID, FID,
  precision, recall, class TV): ``improved`` if at least one gets significantly better and none significantly
  worse; ``degraded (recall, FID)`` if some get worse and none better; ``mixed (worse: ...; better: ...)`` if both;
  else ``no significant change``.
* Across feature spaces, metric by metric: a change is real only when it is significant in the same direction in
  every space; the rule above reads those. Metrics significant in some spaces only are named after the verdict,
  and when nothing else is left the verdict is ``feature-space dependent`` with each space's own verdict.
* Evidence level: 5 or more seeds support a claim; 2-4 seeds are ``screening``; 1 seed is ``1 seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from harness.evaluation.scoring import METRICS, Evaluation, key, paired_difference, verdict_metrics

CLAIM_SEEDS = 5


@dataclass(frozen=True)
class Change:
    """A paired difference with its 95% interval. ``method``: 't over N seeds' or 'half-samples (1 seed)'."""

    mean: float
    lo: float
    hi: float
    n: int
    method: str

    def sign(self, lower_is_better: bool) -> int:
        """+1 significantly better, -1 significantly worse, 0 not significant (or no interval)."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return 0
        if self.lo > 0:
            return -1 if lower_is_better else 1
        if self.hi < 0:
            return 1 if lower_is_better else -1
        return 0


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean; NaN bounds with fewer than 2 values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return float("nan"), float("nan"), float("nan")
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def evidence(n_seeds: int) -> str:
    return "claim" if n_seeds >= CLAIM_SEEDS else "screening" if n_seeds >= 2 else "1 seed" if n_seeds == 1 else "none"


def paired_changes(a: list[Evaluation], b: list[Evaluation], keys: list[str]) -> dict[str, Change]:
    """Change a - b per metric key, the lists paired by position (one entry per seed)."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    out = {}
    for k in keys:
        usable = [(x, y) for x, y in pairs if k in x.values and k in y.values]
        if not usable:
            continue
        if len(usable) == 1:
            mean, lo, hi = paired_difference(*usable[0], k)
            out[k] = Change(mean, lo, hi, 1, "half-samples (1 seed)")
        else:
            mean, lo, hi = t_interval([x.values[k] - y.values[k] for x, y in usable])
            out[k] = Change(mean, lo, hi, len(usable), f"t over {len(usable)} seeds")
    return out


def space_verdict(changes: dict[str, Change], space: str, metric_keys: list[str] | None = None) -> str:
    """The rule in one feature space (see the module docstring)."""
    worse, better = [], []
    for m in metric_keys or verdict_metrics():
        c = changes.get(key(m, space))
        if c is None:
            continue
        s = c.sign(METRICS[m].lower_is_better)
        (better if s > 0 else worse if s < 0 else []).append(METRICS[m].label)
    if worse and better:
        return f"mixed (worse: {', '.join(worse)}; better: {', '.join(better)})"
    if worse:
        return f"degraded ({', '.join(worse)})"
    if better:
        return "improved"
    return "no significant change"


def verdict(changes: dict[str, Change], spaces: list[str], metric_keys: list[str] | None = None) -> str:
    """Across feature spaces, metric by metric: a metric's change is real only when it is significant in the same
    direction in every space. The rule then reads the real changes; metrics significant in some spaces only are
    named after it. Nothing real but something somewhere: ``feature-space dependent`` with each space's verdict.
    An ``improved`` with a metric worse in some space is not an improvement: ``feature-space dependent`` too."""
    if not changes:
        return "no completed pair"
    worse, better, partial, partly_worse = [], [], [], []
    for m in metric_keys or verdict_metrics():
        if not any(key(m, s) in changes for s in spaces):
            continue
        # a space without this metric's change counts as "not significant there"
        signs = [changes[key(m, s)].sign(METRICS[m].lower_is_better) if key(m, s) in changes else 0 for s in spaces]
        label = METRICS[m].label
        if all(x < 0 for x in signs):
            worse.append(label)
        elif all(x > 0 for x in signs):
            better.append(label)
        elif any(signs):
            partial.append(label)
            if any(x < 0 for x in signs):
                partly_worse.append(label)
    per_space = "; ".join(f"{s}: {space_verdict(changes, s, metric_keys)}" for s in spaces)
    if worse and better:
        base = f"mixed (worse: {', '.join(worse)}; better: {', '.join(better)})"
    elif worse:
        base = f"degraded ({', '.join(worse)})"
    elif better and not partly_worse:  # better in every space; what is better in some only is named below
        base = f"improved ({', '.join(better)})"
    else:
        return f"feature-space dependent ({per_space})" if partial else "no significant change"
    return base + (f" [in some spaces only: {', '.join(partial)}]" if partial else "")


def scalar_verdict(deltas: list[float], lower_is_better: bool = True) -> str:
    """One metric without feature spaces (the toy's MMD²): t-interval of the per-seed changes."""
    mean, lo, hi = t_interval(deltas)
    if len([d for d in deltas if d is not None and math.isfinite(d)]) < 2:
        return "1 seed: not judged"
    s = Change(mean, lo, hi, len(deltas), "t").sign(lower_is_better)
    return "improved" if s > 0 else "degraded" if s < 0 else "no significant change"
