"""Distributions of the noise level sigma that the two DI losses draw (``NoiseDist.kind``).

Each kind is one registry entry: a sampler ``(dist, n, device, generator) -> sigma (n,)`` and whether it needs a
finite range [sigma_min, sigma_max]. ``dist`` is a ``harness.method.config.NoiseDist`` (kind, p_mean, p_std, sigma_min,
sigma_max, ddpm_steps); a truncated distribution is sampled by inverse CDF within its range (no rejection loop,
no pile-up at the edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from harness.method.schedules import ddpm_sigma_table, vp_sigma, vp_t_of_sigma


def _uniform_and_log_range(dist, n: int, device, generator) -> tuple[torch.Tensor, float, float]:
    """u ~ U(0, 1) (n,) in float64, and [ln sigma_min, ln sigma_max] (-inf when sigma_min = 0)."""
    u = torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    lo = math.log(dist.sigma_min) if dist.sigma_min > 0 else -math.inf
    return u, lo, math.log(dist.sigma_max)


def _within_range(sigma: torch.Tensor, dist) -> torch.Tensor:
    return sigma.clamp(dist.sigma_min, dist.sigma_max).float()


def _lognormal(dist, n: int, device, generator) -> torch.Tensor:
    """ln sigma ~ N(p_mean, p_std), optionally truncated to [sigma_min, sigma_max]."""
    if not dist.truncated:  # the release: exp(randn * P_std + P_mean)
        return (torch.randn(n, generator=generator, device=device) * dist.p_std + dist.p_mean).exp()
    u, lo, hi = _uniform_and_log_range(dist, n, device, generator)
    f64 = torch.float64
    normal = torch.distributions.Normal(torch.tensor(dist.p_mean, dtype=f64), torch.tensor(dist.p_std, dtype=f64))
    c_lo = normal.cdf(torch.tensor(lo, dtype=f64)) if math.isfinite(lo) else torch.tensor(0.0, dtype=f64)
    c_hi = normal.cdf(torch.tensor(hi, dtype=f64)) if math.isfinite(hi) else torch.tensor(1.0, dtype=f64)
    p = (c_lo + u.cpu() * (c_hi - c_lo)).clamp(1e-12, 1 - 1e-12)
    return _within_range(normal.icdf(p).exp().to(device), dist)


def _uniform_log(dist, n: int, device, generator) -> torch.Tensor:
    """ln sigma uniform in [ln sigma_min, ln sigma_max]."""
    u, lo, hi = _uniform_and_log_range(dist, n, device, generator)
    return _within_range(torch.exp(lo + u * (hi - lo)), dist)


def _uniform_vp_t(dist, n: int, device, generator) -> torch.Tensor:
    """t uniform on the continuous linear-beta VP SDE's times whose sigma(t) lies in [sigma_min, sigma_max]."""
    u, _, _ = _uniform_and_log_range(dist, n, device, generator)
    t_lo, t_hi = vp_t_of_sigma(dist.sigma_min), vp_t_of_sigma(dist.sigma_max)
    return _within_range(vp_sigma(t_lo + u * (t_hi - t_lo)), dist)


def _ddpm_discrete(dist, n: int, device, generator) -> torch.Tensor:
    """t uniform over the DDPM steps whose sigma lies in [sigma_min, sigma_max]."""
    table = ddpm_sigma_table(dist.ddpm_steps)
    allowed = table[(table >= dist.sigma_min) & (table <= dist.sigma_max)]
    if len(allowed) == 0:
        raise ValueError(f"no DDPM step has sigma in [{dist.sigma_min}, {dist.sigma_max}]")
    idx = torch.randint(0, len(allowed), (n,), generator=generator)
    return allowed[idx].float().to(device)


@dataclass(frozen=True)
class SigmaKind:
    sample: Callable[..., torch.Tensor]  # (dist, n, device, generator) -> sigma (n,)
    needs_finite_range: bool = False  # only defined on 0 < sigma_min < sigma_max < inf


# Registry: NoiseDist.kind -> its sampler. Its keys are the kinds NoiseDist accepts, in this order.
SIGMA_KINDS = {
    "lognormal": SigmaKind(_lognormal),
    "uniform_log": SigmaKind(_uniform_log, needs_finite_range=True),
    "uniform_vp_t": SigmaKind(_uniform_vp_t, needs_finite_range=True),
    "ddpm_discrete": SigmaKind(_ddpm_discrete),
}


def sample_sigma(dist, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample sigma (n,) drawn from ``dist`` (a NoiseDist)."""
    if dist.kind not in SIGMA_KINDS:  # guarded by config validation
        raise ValueError(dist.kind)
    return SIGMA_KINDS[dist.kind].sample(dist, n, device, generator)
