"""Diffusion teachers behind one score interface, their training losses and their samplers.

Both teachers answer in VE coordinates, which is what the Diff-Instruct loop uses:
    denoise(x_sigma, sigma) -> D(x_sigma, sigma) ~ E[x0 | x_sigma]
    score(x_sigma, sigma)   -> (D - x_sigma) / sigma^2
``sigma`` is a per-sample tensor of shape (B,).

- ``EDMTeacher``: Karras et al. 2022 preconditioning, D = c_skip x + c_out F(c_in x, c_noise),
  trained with lambda(sigma)-weighted denoising loss, ln sigma ~ N(P_mean, P_std); Heun sampler.
- ``DDPMTeacher``: eps-prediction with a discrete linear-beta schedule (Ho et al. 2020), trained with
  MSE or Huber on eps (seed 000 used Huber); sampled with ancestral DDPM or DDIM. In VE terms
  x0_hat = x_sigma - sigma * eps_hat and score = -eps_hat / sigma.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from harness.method import schedules
from harness.testbed.assets import load_raw
from harness.method.networks import build
from harness.method.schedules import SIGMA_DATA
from harness.testbed.toy import GMMTeacher, MLPDenoiser


def edm_denoising_loss(denoiser: nn.Module, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                       sigma_data: float = SIGMA_DATA, pixels: str = "sum") -> torch.Tensor:
    """EDM's denoising loss per sample (B,): lambda(sigma) ||D(x0 + sigma eps, sigma) - x0||^2 with eps = ``noise``,
    summed over pixels (``pixels="sum"``: DI's aux loss) or averaged (``"mean"``: the teachers' training loss)."""
    s = sigma.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    error = (schedules.edm_loss_weight(s, sigma_data) * (denoiser.denoise(x0 + s * noise, sigma) - x0) ** 2).flatten(1)
    return error.sum(1) if pixels == "sum" else error.mean(1)


class EDMTeacher(nn.Module):
    kind = "edm"

    def __init__(self, net: nn.Module, sigma_data: float = SIGMA_DATA, p_mean: float = -1.2, p_std: float = 1.2):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.p_mean, self.p_std = p_mean, p_std

    def denoise(self, x_sigma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sd = self.sigma_data
        s = sigma.to(x_sigma.dtype).reshape(-1, 1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_noise = s.flatten().log() / 4
        return c_skip * x_sigma + c_out * self.net(c_in * x_sigma, c_noise)

    def score(self, x_sigma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (self.denoise(x_sigma, sigma) - x_sigma) / sigma.to(x_sigma.dtype).reshape(-1, 1, 1, 1) ** 2

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """EDM training loss per sample (B,): lambda(sigma) * ||D(x0 + sigma eps) - x0||^2, averaged over pixels."""
        b = x0.shape[0]
        sigma = (torch.randn(b, generator=generator, device=x0.device) * self.p_std + self.p_mean).exp()
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        return edm_denoising_loss(self, x0, sigma, noise, self.sigma_data, pixels="mean")

    @torch.no_grad()
    def sample(self, z: torch.Tensor, steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
               rho: float = 7.0, sampler: str = "heun") -> torch.Tensor:
        """EDM deterministic sampler (Karras et al. 2022, Alg. 1): Heun's 2nd order, last step Euler.
        ``steps`` sigmas give 2*steps - 1 network evaluations (18 -> 35 NFE). z ~ N(0, I)."""
        if sampler != "heun":
            raise ValueError(f"EDM teacher supports sampler 'heun', got {sampler!r}")
        sigmas = schedules.karras_sigmas(steps, sigma_min, sigma_max, rho).to(z.device)
        x = z.double() * sigmas[0]
        ones = torch.ones(z.shape[0], device=z.device, dtype=torch.float64)
        for i in range(steps):
            s_cur, s_next = sigmas[i], sigmas[i + 1]
            d_cur = (x - self.denoise(x.float(), (s_cur * ones).float()).double()) / s_cur
            x_next = x + (s_next - s_cur) * d_cur
            if s_next > 0:  # 2nd-order correction
                d_next = (x_next - self.denoise(x_next.float(), (s_next * ones).float()).double()) / s_next
                x_next = x + (s_next - s_cur) * (0.5 * d_cur + 0.5 * d_next)
            x = x_next
        return x.float()

    @staticmethod
    def nfe(steps: int = 18, **_) -> int:
        return 2 * steps - 1


class DDPMTeacher(nn.Module):
    kind = "ddpm"

    def __init__(self, net: nn.Module, num_steps: int = 2000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 loss_type: str = "mse", huber_delta: float = 1.0):
        super().__init__()
        if loss_type not in ("mse", "huber"):
            raise ValueError(f"loss_type must be 'mse' or 'huber', got {loss_type!r}")
        self.net = net
        self.num_steps = num_steps
        self.loss_type, self.huber_delta = loss_type, huber_delta
        betas = schedules.linear_betas(num_steps, beta_start, beta_end)
        alphabar = schedules.alphabar_from_betas(betas)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphabar", alphabar, persistent=False)
        self.register_buffer("sigma_table", schedules.sigma_from_alphabar(alphabar), persistent=False)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps_hat(x_t, t) with t a (possibly fractional) index in [0, T-1]; label = t / T."""
        return self.net(x_t, t.to(x_t.dtype) / self.num_steps)

    def denoise(self, x_sigma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(x_sigma.dtype).reshape(-1, 1, 1, 1)
        t = schedules.continuous_t_from_sigma(sigma, self.sigma_table)
        x_t = x_sigma * schedules.vp_scale_from_sigma(s)
        return x_sigma - s * self.eps(x_t, t)

    def score(self, x_sigma: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.to(x_sigma.dtype).reshape(-1, 1, 1, 1)
        t = schedules.continuous_t_from_sigma(sigma, self.sigma_table)
        return -self.eps(x_sigma * schedules.vp_scale_from_sigma(s), t) / s

    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample eps-prediction loss (B,): MSE or Huber (delta ``huber_delta``), t uniform in {0..T-1}."""
        b = x0.shape[0]
        t = torch.randint(0, self.num_steps, (b,), generator=generator, device=x0.device)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        ab = self.alphabar[t].to(x0.dtype).reshape(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        pred = self.eps(x_t, t.double())
        if self.loss_type == "mse":
            per = (pred - eps) ** 2
        else:
            per = F.huber_loss(pred, eps, reduction="none", delta=self.huber_delta)
        return per.flatten(1).mean(1)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, steps: int = 50, sampler: str = "ddim", eta: float | None = None) -> torch.Tensor:
        """DDIM (Song et al. 2021) on ``steps`` evenly spaced indices; eta=0 deterministic DDIM,
        eta=1 ancestral DDPM on the sub-sequence. ``sampler='ancestral'`` with steps=T is Ho et al.'s
        full ancestral sampler. z ~ N(0, I) is x_T."""
        if sampler not in ("ddim", "ancestral"):
            raise ValueError(f"DDPM teacher samplers are 'ddim' and 'ancestral', got {sampler!r}")
        if eta is None:
            eta = 0.0 if sampler == "ddim" else 1.0
        steps = min(steps, self.num_steps)
        ts = torch.linspace(self.num_steps - 1, 0, steps).round().long().tolist()
        x = z.double()
        ab_all = self.alphabar.to(z.device)
        for i, t in enumerate(ts):
            ab = ab_all[t]
            ab_prev = ab_all[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64, device=z.device)
            eps = self.eps(x.float(), torch.full((z.shape[0],), float(t), device=z.device)).double()
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # re-derive eps consistent with the clipped x0
            var = eta**2 * (1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - var).clamp(min=0).sqrt() * eps
            if i + 1 < len(ts) and eta > 0:
                x = x + var.sqrt() * torch.randn_like(x)
        return x.float()

    @staticmethod
    def nfe(steps: int = 50, **_) -> int:
        return steps


# Registry: a teacher spec's kind -> (UNet, spec) -> teacher. Checkpoints store the spec and rebuild through here.
TEACHER_KINDS = {
    "edm": lambda net, spec: EDMTeacher(net),
    "ddpm": lambda net, spec: DDPMTeacher(net, spec.get("num_steps", 2000), spec.get("beta_start", 1e-4),
                                          spec.get("beta_end", 0.02), spec.get("loss_type", "mse")),
}


def build_teacher(spec: dict) -> EDMTeacher | DDPMTeacher:
    """A teacher from its spec: ``kind`` (edm | ddpm), ``unet`` (the UNet's config) and, for ddpm, the
    parameterisation (``num_steps``, ``beta_start``, ``beta_end``, ``loss_type``)."""
    net = build("unet", **spec["unet"])
    if spec["kind"] not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {spec['kind']!r}; known: {', '.join(TEACHER_KINDS)}")
    return TEACHER_KINDS[spec["kind"]](net, spec)


def load_teacher(name: str, directory=None):
    """Teacher asset by name ('edm', 'ddpm-huber', 'ddpm-mse'), in eval mode."""
    raw = load_raw(f"teacher-{name}" if not name.startswith("teacher-") else name, directory)
    teacher = build_teacher(raw["config"]["teacher"])
    teacher.net.load_state_dict(raw["state_dict"])
    return teacher.eval(), raw["config"]


def default_sampler_kwargs(teacher) -> dict:
    """The sampler each teacher is evaluated with in the baseline table."""
    return {"steps": 18, "sampler": "heun"} if teacher.kind == "edm" else {"steps": 50, "sampler": "ddim"}


# ----------------------------------------------------------------------------------------------
# The teachers a DI run can name (DIConfig.teacher)


@dataclass(frozen=True)
class NamedTeacher:
    load: Callable  # (cfg, asset_dir) -> (D_p in eval mode, a builder of an untrained denoiser of its architecture)
    asset: str | None = None  # the shipped checkpoint it loads
    analytic: bool = False  # an exact score (the toy): no network, no feature spaces, scored by its own metrics


def _shipped_teacher(name: str) -> NamedTeacher:
    def load(cfg, asset_dir=None):
        teacher, config = load_teacher(name, asset_dir)
        return teacher, lambda: build_teacher(config["teacher"])  # zero-initialised output: D_q = c_skip x at start

    return NamedTeacher(load, asset=f"teacher-{name}")


def _toy_teacher(cfg, asset_dir=None):
    return GMMTeacher(weights=cfg.toy.mode_weights, stds=cfg.toy.mode_stds), MLPDenoiser


# Registry: name -> teacher. Its keys are the values DIConfig.teacher accepts, in this order.
TEACHERS = {
    "edm": _shipped_teacher("edm"),
    "ddpm-huber": _shipped_teacher("ddpm-huber"),  # seed 000's
    "ddpm-mse": _shipped_teacher("ddpm-mse"),
    "toy-gmm": NamedTeacher(_toy_teacher, analytic=True),  # analytic: the exact-score toy (harness.testbed.toy)
}
