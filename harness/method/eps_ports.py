"""How an eps-predicting port computes the gap the generator gradient multiplies (``DIConfig.eps_port``).

The right gap is the denoiser gap D_q - D_p. A port that works with eps-networks writes it through
eps = (x_sigma - D) / sigma, so eps_q - eps_p = (D_p - D_q) / sigma, and three porting mistakes are each a factor on
the right gap. Each entry is ``gap(d_q, d_p, sigma) -> tensor like d_q``; adding a mistake is one entry.
"""

from __future__ import annotations

import torch


def _per_sample(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def _eps_gap(d_q: torch.Tensor, d_p: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma per sample, eps_q - eps_p)."""
    s = _per_sample(sigma, d_q)
    return s, (d_p - d_q) / s


def _sign_flipped(d_q, d_p, sigma):
    s, eps_gap = _eps_gap(d_q, d_p, sigma)
    return s * eps_gap  # correct would be -sigma (eps_q - eps_p): factor -1


def _no_sigma(d_q, d_p, sigma):
    return -_eps_gap(d_q, d_p, sigma)[1]  # factor 1/sigma


def _eps_as_score(d_q, d_p, sigma):
    s, eps_gap = _eps_gap(d_q, d_p, sigma)
    return s**2 * eps_gap  # sigma^2 (s_q - s_p) with eps in place of the score: factor -sigma


# Registry: DIConfig.eps_port -> gap. ``exact`` (the reference) first.
EPS_PORTS = {
    "exact": lambda d_q, d_p, sigma: d_q - d_p,
    "sign_flipped": _sign_flipped,
    "no_sigma": _no_sigma,
    "eps_as_score": _eps_as_score,
}


def ported_gap(port: str, d_q: torch.Tensor, d_p: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The gap as the port ``port`` computes it; only ``exact`` is right."""
    if port not in EPS_PORTS:  # guarded by config validation
        raise ValueError(port)
    return EPS_PORTS[port](d_q, d_p, sigma)
