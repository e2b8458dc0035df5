"""Generator-loss weightings w(sigma) on the denoiser gap D_q - D_p (``DIConfig.weighting``).

The generator gradient of Diff-Instruct is (1/B) sum_i w(sigma_i) (D_q - D_p)(x_sigma_i) . d x0_i / d theta; the
reference loop uses w = 1, which is sigma^2 on the score gap s_q - s_p = (D_q - D_p) / sigma^2. Each entry below is
one alternative, called as ``w(sigma, x0, d_p)`` and returning a per-sample weight (B,).

Symbols: ``sigma`` (B,) VE noise levels; ``x0`` the generator's samples; ``d_p`` the teacher's denoised estimate
D_p(x_sigma, sigma) (detached); ``SIGMA_DATA`` EDM's data standard deviation.
"""

from __future__ import annotations

import torch

from harness.method.schedules import SIGMA_DATA, edm_loss_weight


def _dmd_normalized(sigma: torch.Tensor, x0: torch.Tensor, d_p: torch.Tensor) -> torch.Tensor:
    """DMD: divide by the mean absolute gap between x0 and the teacher's estimate, per sample."""
    return 1.0 / (x0 - d_p).detach().abs().flatten(1).mean(1).clamp_min(1e-8)


# Registry: name -> w(sigma, x0, d_p). Its keys are the values DIConfig.weighting accepts, in this order.
WEIGHTINGS = {
    "reference": lambda sigma, x0, d_p: torch.ones_like(sigma),
    "score_uniform": lambda sigma, x0, d_p: sigma**-2,  # unit weight on the score gap
    "snr": lambda sigma, x0, d_p: SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2),
    "edm_lambda": lambda sigma, x0, d_p: edm_loss_weight(sigma, SIGMA_DATA),
    "dmd_normalized": _dmd_normalized,
    # unit weight on the eps gap: the plain DDPM port, (eps_p - eps_q) = (D_q - D_p) / sigma
    "eps_uniform": lambda sigma, x0, d_p: sigma**-1,
}


def generator_weight(kind: str, sigma: torch.Tensor, x0: torch.Tensor, d_p: torch.Tensor) -> torch.Tensor:
    """Per-sample weight w (B,) on the denoiser gap D_q - D_p (see DIConfig.weighting)."""
    if kind not in WEIGHTINGS:
        raise ValueError(kind)
    return WEIGHTINGS[kind](sigma, x0, d_p)
