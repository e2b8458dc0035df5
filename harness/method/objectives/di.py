"""``di``: Diff-Instruct's generator surrogate (the reference, and the default objective).

The generator gradient of the reference loop, with only x0 carrying gradient:

    grad_theta = (1/B) sum_i w(sigma_i) gap_i . d x0_i / d theta,   gap = D_q - D_p at x_sigma = x0 + sigma eps

so the surrogate per sample is sum_pixels w * stopgrad(gap) * x0. ``w`` is ``DIConfig.weighting``
(harness.method.weightings; the reference is 1, i.e. sigma^2 on the score gap), sigma is drawn from ``DIConfig.gen_sigma``
and ``gap`` is computed as ``DIConfig.eps_port`` says (harness.method.eps_ports; ``exact`` is D_q - D_p).

Statistics: the score gap ||s_q - s_p||^2 = ||D_q - D_p||^2 / sigma^4 per sample, with its sigma, summarised per
round as the mean and the mean in fixed sigma bins.
"""

from __future__ import annotations

import math

import torch

from harness.method.eps_ports import ported_gap
from harness.method.weightings import generator_weight
from harness.method.objectives import Objective

# Fixed score-gap bins in sigma (edges); the per-round diagnostics report E||s_q - s_p||^2 per bin.
SIGMA_BIN_EDGES = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, math.inf)
SIGMA_BIN_NAMES = tuple(f"gap_s{lo:g}-{hi:g}" for lo, hi in zip(SIGMA_BIN_EDGES[:-1], SIGMA_BIN_EDGES[1:]))


def di_loss(cfg, scores, x0: torch.Tensor):
    b = x0.shape[0]
    sigma = scores.sigma(cfg.gen_sigma, b)
    noise = scores.noise(x0)
    s = sigma.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    x_sigma = x0 + s * noise
    d_p, d_q = scores.denoise(x_sigma, sigma)
    w = generator_weight(cfg.weighting, sigma.to(x0.dtype), x0, d_p.detach()).reshape(-1, *([1] * (x0.dim() - 1)))
    gap = ported_gap(cfg.eps_port, d_q, d_p, sigma)
    per_sample = (w * gap * x0).flatten(1).sum(1)
    with torch.no_grad():
        score_gap = ((d_q - d_p).detach().flatten(1).pow(2).sum(1)) / sigma.to(x0.dtype) ** 4
    return per_sample, {"score_gap": score_gap, "sigma": sigma.detach()}


def bin_score_gap(score_gap: torch.Tensor, sigma: torch.Tensor) -> dict:
    """Mean score gap per fixed sigma bin (NaN for empty bins)."""
    out = {}
    for name, lo, hi in zip(SIGMA_BIN_NAMES, SIGMA_BIN_EDGES[:-1], SIGMA_BIN_EDGES[1:]):
        mask = (sigma >= lo) & (sigma < hi)
        out[name] = score_gap[mask].mean().item() if mask.any() else float("nan")
    return out


def summarise(per_sample: dict) -> dict:
    gap, sigma = per_sample["score_gap"], per_sample["sigma"]
    return {"score_gap": gap.mean().item(), **bin_score_gap(gap, sigma)}


OBJECTIVE = Objective(
    name="di", loss=di_loss, summarise=summarise,
    description="Diff-Instruct's surrogate w(sigma) stopgrad(D_q - D_p) . x0 (reference)")
