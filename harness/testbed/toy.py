"""Exact-score toy: a 2-D Gaussian mixture whose denoiser is analytic at every noise level.

Data: K modes mu_k on a circle of radius ``radius``, each N(mu_k, s_k^2 I), with weights pi_k (equal, or a ramp
pi_k proportional to k = 1..K: the smallest mode then holds 1/8 of the largest's mass, for K = 8) and widths s_k
(equal, or a ramp from s/2 to 3s/2: narrow and broad modes of equal mass, as FashionMNIST's classes differ in
spread). At noise sigma the noisy marginal is sum_k pi_k N(mu_k, v_k I) with v_k = s_k^2 + sigma^2, and the exact
denoiser is
    D_p(x, sigma) = sum_k r_k(x) (s_k^2 x + sigma^2 mu_k) / v_k,
    r_k(x) = softmax_k( log pi_k - log v_k - ||x - mu_k||^2 / (2 v_k) )     (2-D: the normaliser is 1 / v_k).
If the DI loop converges with this teacher, a failure elsewhere is the teacher's or the setting's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.method.schedules import SIGMA_DATA


# Registries of the toy's target (DIConfig.toy.mode_stds / toy.mode_weights): name -> (K, std) -> s_k or (K,) -> pi_k.
MODE_STDS = {
    "equal": lambda num_modes, std: torch.full((num_modes,), std),
    "ramp": lambda num_modes, std: torch.linspace(0.5 * std, 1.5 * std, num_modes),  # std/2 .. 3 std/2, mean std
}
MODE_WEIGHTS = {
    "equal": lambda num_modes: torch.ones(num_modes),
    "ramp": lambda num_modes: torch.arange(1, num_modes + 1, dtype=torch.float32),  # proportional to k = 1..K
}


def mode_stds(kind: str, num_modes: int, std: float) -> torch.Tensor:
    """s_k: ``equal`` (std each) or ``ramp`` (linear from std/2 to 3 std/2, mean std)."""
    if kind not in MODE_STDS:
        raise ValueError(f"toy mode stds must be one of {', '.join(MODE_STDS)}, got {kind!r}")
    return MODE_STDS[kind](num_modes, std)


def mode_weights(kind: str, num_modes: int) -> torch.Tensor:
    """pi_k: ``equal`` (1/K each) or ``ramp`` (proportional to k = 1..K)."""
    if kind not in MODE_WEIGHTS:
        raise ValueError(f"toy mode weights must be one of {', '.join(MODE_WEIGHTS)}, got {kind!r}")
    w = MODE_WEIGHTS[kind](num_modes)
    return w / w.sum()


class GMMTeacher(nn.Module):
    kind = "toy"

    def __init__(self, num_modes: int = 8, radius: float = 1.0, std: float = 0.1, weights: str = "equal",
                 stds: str = "equal"):
        super().__init__()
        angles = torch.arange(num_modes) * 2 * math.pi / num_modes
        self.register_buffer("means", radius * torch.stack([angles.cos(), angles.sin()], 1))
        self.register_buffer("weights", mode_weights(weights, num_modes))
        self.register_buffer("stds", mode_stds(stds, num_modes, std))
        self.std = std  # the mean width (thresholds of the mode metrics scale with each mode's own s_k)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s2 = self.stds.to(x.dtype)[None] ** 2  # (1, K)
        sig2 = sigma.to(x.dtype).reshape(-1, 1) ** 2  # (B, 1)
        var = s2 + sig2  # (B, K)
        means = self.means.to(x.dtype)
        logits = (self.weights.to(x.dtype).log()[None] - var.log()
                  - ((x[:, None, :] - means[None]) ** 2).sum(-1) / (2 * var))  # (B, K)
        r = logits.softmax(1)
        per_mode = (s2[:, :, None] * x[:, None, :] + sig2[:, :, None] * means[None]) / var[:, :, None]  # (B, K, 2)
        return (r[:, :, None] * per_mode).sum(1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (self.denoise(x, sigma) - x) / sigma.to(x.dtype).reshape(-1, 1) ** 2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k, None] * torch.randn((n, 2), generator=generator)


def _nearest_mode(samples: torch.Tensor, teacher: "GMMTeacher") -> tuple[torch.Tensor, torch.Tensor]:
    """(nearest mode of each sample, whether it lies within 4 of that mode's own std)."""
    d = torch.cdist(samples.float(), teacher.means.float())
    nearest = d.argmin(1)
    return nearest, d.gather(1, nearest[:, None])[:, 0] < 4 * teacher.stds.float()[nearest]


class MLPDenoiser(nn.Module):
    """D_q(x, sigma) = c_skip x + c_out F(c_in x, ln sigma / 4), F a small MLP (EDM preconditioning)."""

    def __init__(self, hidden: int = 128, sigma_data: float = SIGMA_DATA):
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


def mode_shares(samples: torch.Tensor, teacher: "GMMTeacher") -> torch.Tensor:
    """Each mode's mass: the share of all samples whose nearest mode it is. Every sample counts, however far
    from its mode: a generator that resolves a narrow mode less sharply than a broad one must not look as if it
    gave the narrow mode less mass (that is the in-mode fraction's business)."""
    nearest, _ = _nearest_mode(samples, teacher)
    return torch.bincount(nearest, minlength=len(teacher.means)).float() / max(len(samples), 1)


def toy_metrics(samples: torch.Tensor, teacher: GMMTeacher, seed: int = 0) -> dict:
    """Mode coverage (modes holding >= 20% of their fair share of samples within 4 std), fraction of
    samples within 4 std of some mode ("quality"), MMD^2 to fresh data, the data-vs-data MMD^2 floor, and how
    the samples share out over the modes (nearest mode: ``mode_shares``) against the target's weights:
    ``mode_mass_tv`` (total variation, 0 = the target's weights), ``mode_mass_<k>`` (share of mode k) and
    ``min_mode_ratio`` (smallest share / weight: below 1, the generator under-weights some mode)."""
    samples = samples.detach().float()
    nearest, close = _nearest_mode(samples, teacher)
    k = len(teacher.means)
    counts = torch.bincount(nearest[close], minlength=k).float()
    covered = int((counts >= 0.2 * len(samples) / k).sum())
    g = torch.Generator().manual_seed(seed)
    n = min(len(samples), 2000)
    real_a, real_b = teacher.sample(n, g), teacher.sample(n, g)
    share = mode_shares(samples, teacher)
    weights = teacher.weights.float()
    floor = mode_shares(teacher.sample(len(samples), g), teacher)  # the TV that n samples of the target itself show
    masses = {f"mode_mass_{i}": share[i].item() for i in range(k)}
    return {"modes_covered": covered, "num_modes": k, "in_mode_fraction": close.float().mean().item(),
            "mmd2": rbf_mmd2(samples[:n], real_a), "mmd2_data_floor": rbf_mmd2(real_b, real_a), "n_samples": len(samples),
            "mode_mass_tv": 0.5 * (share - weights).abs().sum().item(), "min_mode_ratio": (share / weights).min().item(),
            "mode_mass_tv_floor": 0.5 * (floor - weights).abs().sum().item(),
            **masses}
