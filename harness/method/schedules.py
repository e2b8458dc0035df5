"""Noise schedules and the conversions between the VP (DDPM) and VE (EDM) parameterisations.

Notation (see docs/reference-loop.md):
    VE / EDM:  x_sigma = x0 + sigma * eps
    VP / DDPM: x_t = a_t * x0 + s_t * eps,  a_t = sqrt(alphabar_t),  s_t = sqrt(1 - alphabar_t)
    sigma = s_t / a_t,   x_sigma = x_t / a_t,   a_t = 1 / sqrt(1 + sigma^2)
    continuous VP SDE (linear beta, 0.1 -> 20): sigma(t) = sqrt(exp(0.5 (b_max - b_min) t^2 + b_min t) - 1)
All functions are pure and work on tensors of any shape.
"""

from __future__ import annotations

import functools
import math

import torch

# EDM's sigma_data: the data standard deviation that the preconditioning (EDMTeacher, the toy's MLPDenoiser) and the
# lambda(sigma) and snr weights assume (Karras et al. 2022, Table 1).
SIGMA_DATA = 0.5


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear beta schedule (Ho et al. 2020), float64. Not rescaled for num_steps: with T=2000
    (seed 000) alphabar_T reaches ~1e-9 (docs/hypotheses.md#noise-range)."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def alphabar_from_betas(betas: torch.Tensor) -> torch.Tensor:
    return torch.cumprod(1.0 - betas, dim=0)


def sigma_from_alphabar(alphabar: torch.Tensor) -> torch.Tensor:
    """sigma = s_t / a_t = sqrt((1 - alphabar) / alphabar)."""
    return ((1.0 - alphabar) / alphabar).sqrt()


def alphabar_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of sigma_from_alphabar: alphabar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + sigma**2)


def vp_scale_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """a_t = 1 / sqrt(1 + sigma^2)."""
    return (1.0 + sigma**2).rsqrt()


def vp_to_ve(x_t: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """x_sigma = x_t / a_t."""
    return x_t / a_t


def ve_to_vp(x_sigma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = a_t * x_sigma with a_t = 1 / sqrt(1 + sigma^2)."""
    return x_sigma * vp_scale_from_sigma(sigma)


@functools.lru_cache(maxsize=4)
def ddpm_sigma_table(num_steps: int) -> torch.Tensor:
    """sigma_t of DDPM's linear beta schedule (1e-4 -> 0.02) at t = 0 .. T-1, float64, increasing."""
    return sigma_from_alphabar(alphabar_from_betas(linear_betas(num_steps)))


def vp_sigma(t: torch.Tensor, beta_min: float = 0.1, beta_max: float = 20.0) -> torch.Tensor:
    """sigma(t) of the continuous linear-beta VP SDE: sqrt(exp(0.5 (b_max - b_min) t^2 + b_min t) - 1)."""
    return torch.sqrt(torch.expm1(0.5 * (beta_max - beta_min) * t**2 + beta_min * t))


def vp_t_of_sigma(sigma: float, beta_min: float = 0.1, beta_max: float = 20.0) -> float:
    """Inverse of ``vp_sigma`` (root of a quadratic in t)."""
    c = math.log1p(sigma**2)
    a = 0.5 * (beta_max - beta_min)
    return (-beta_min + math.sqrt(beta_min**2 + 4 * a * c)) / (2 * a)


def continuous_t_from_sigma(sigma: torch.Tensor, sigma_table: torch.Tensor) -> torch.Tensor:
    """Fractional DDPM index t in [0, T-1] whose sigma equals ``sigma``, by linear interpolation of
    log sigma over the (increasing) discrete table. Values outside the table are clamped.

    This lets a discrete-time eps-network answer at any VE noise level, as the DI loop needs.
    """
    log_table = sigma_table.log().to(sigma.device, torch.float64)
    log_sigma = sigma.double().log().clamp(log_table[0], log_table[-1])
    idx = torch.searchsorted(log_table, log_sigma.contiguous()).clamp(1, len(log_table) - 1)
    lo, hi = log_table[idx - 1], log_table[idx]
    frac = (log_sigma - lo) / (hi - lo)
    return (idx - 1).double() + frac


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM's time discretisation (Karras et al. 2022, eq. 5), decreasing, with a final 0 appended."""
    i = torch.arange(num_steps, dtype=torch.float64)
    sigmas = (sigma_max ** (1 / rho) + i / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros(1, dtype=torch.float64)])


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 (EDM, Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


# Registry: DIConfig.aux_lr_decay -> the multiplier on the base learning rate at (round_idx, rounds).
LR_DECAYS = {
    "none": lambda round_idx, rounds: 1.0,
    "linear": lambda round_idx, rounds: 1.0 - round_idx / max(rounds, 1),  # 1 down to 1/rounds at the last round
    "cosine": lambda round_idx, rounds: 0.5 * (1.0 + math.cos(math.pi * round_idx / max(rounds, 1))),  # towards 0
}


def lr_decay_factor(kind: str, round_idx: int, rounds: int) -> float:
    """Multiplier on a base learning rate at round ``round_idx`` of ``rounds``: ``none`` 1; ``linear`` from 1 down
    to 1/rounds at the last round; ``cosine`` half a cosine from 1 towards 0."""
    if kind not in LR_DECAYS:  # guarded by config validation
        raise ValueError(kind)
    return LR_DECAYS[kind](round_idx, rounds)
