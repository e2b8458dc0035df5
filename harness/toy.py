"""Exact-score toy: a 2-D Gaussian mixture whose denoiser is analytic at every noise level.

Data: K modes mu_k on a circle of radius ``radius``, each N(mu_k, s^2 I), equal weights.
At noise sigma the noisy marginal is sum_k pi_k N(mu_k, (s^2 + sigma^2) I), and the exact denoiser is
    D_p(x, sigma) = sum_k r_k(x) (s^2 x + sigma^2 mu_k) / (s^2 + sigma^2),
    r_k(x) = softmax_k( -||x - mu_k||^2 / (2 (s^2 + sigma^2)) ).
If the DI loop converges with this teacher, a failure elsewhere is the teacher's or the setting's.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GMMTeacher(nn.Module):
    kind = "toy"

    def __init__(self, num_modes: int = 8, radius: float = 1.0, std: float = 0.1):
        super().__init__()
        angles = torch.arange(num_modes) * 2 * math.pi / num_modes
        self.register_buffer("means", radius * torch.stack([angles.cos(), angles.sin()], 1))
        self.std = std

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        var = self.std**2 + sigma.to(x.dtype).reshape(-1, 1) ** 2  # (B, 1)
        means = self.means.to(x.dtype)
        logits = -((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * var)  # (B, K)
        r = logits.softmax(1)
        s2, sig2 = self.std**2, sigma.to(x.dtype).reshape(-1, 1) ** 2
        per_mode = (s2 * x[:, None, :] + sig2[:, :, None] * means[None]) / var[:, :, None]  # (B, K, 2)
        return (r[:, :, None] * per_mode).sum(1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (self.denoise(x, sigma) - x) / sigma.to(x.dtype).reshape(-1, 1) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.randint(0, len(self.means), (n,), generator=generator)
        return self.means[k] + self.std * torch.randn((n, 2), generator=generator)


class MLPDenoiser(nn.Module):
    """D_q(x, sigma) = c_skip x + c_out F(c_in x, ln sigma / 4), F a small MLP (EDM preconditioning)."""

    def __init__(self, hidden: int = 128, sigma_data: float = 0.5):
        super().__init__()
        self.sigma_data = sigma_data
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sd, s = self.sigma_data, sigma.to(x.dtype).reshape(-1, 1)
        c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * self.net(torch.cat([c_in * x, s.log() / 4], 1))


class MLPGenerator(nn.Module):
    """z (B, latent) -> x0 (B, 2)."""

    def __init__(self, latent_dim: int = 4, hidden: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def rbf_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.05, 0.2, 1.0)) -> float:
    """Biased MMD^2 with a sum of RBF kernels (multi-scale), small-sample friendly."""
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy) ** 2
    k = sum(torch.exp(-d2 / (2 * h**2)) for h in bandwidths)
    n = len(x)
    return (k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()).item()


def toy_metrics(samples: torch.Tensor, teacher: GMMTeacher, seed: int = 0) -> dict:
    """Mode coverage (modes holding >= 20% of their fair share of samples within 4 std), fraction of
    samples within 4 std of some mode ("quality"), MMD^2 to fresh data, and the data-vs-data MMD^2 floor."""
    samples = samples.detach().float()
    d = torch.cdist(samples, teacher.means)
    nearest = d.argmin(1)
    close = d.min(1).values < 4 * teacher.std
    k = len(teacher.means)
    counts = torch.bincount(nearest[close], minlength=k).float()
    covered = int((counts >= 0.2 * len(samples) / k).sum())
    g = torch.Generator().manual_seed(seed)
    n = min(len(samples), 2000)
    real_a, real_b = teacher.sample(n, g), teacher.sample(n, g)
    return {"modes_covered": covered, "num_modes": k, "in_mode_fraction": close.float().mean().item(),
            "mmd2": rbf_mmd2(samples[:n], real_a), "mmd2_data_floor": rbf_mmd2(real_b, real_a), "n_samples": len(samples)}
