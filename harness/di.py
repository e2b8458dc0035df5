"""Diff-Instruct (Luo et al., NeurIPS 2023): one auxiliary step and one generator step.

This is the public one-step API; ``harness.loop.train`` calls these two functions every round.

Symbols (docs/reference-loop.md):
    G        one-step generator, x0 = G(z)                     (theta; ``G`` in the release)
    D_q      auxiliary ("fake") denoiser on generator samples  (phi;   ``Sg``)
    D_p      teacher denoiser                                  (       ``net``)
    sigma    VE noise level, x_sigma = x0 + sigma * eps
    w        weight on the denoiser gap D_q - D_p; the score gap is s_q - s_p = (D_q - D_p) / sigma^2

Generator gradient of the reference loop (only x0 carries gradient):
    grad_theta = (1/B) sum_i w(sigma_i) (D_q - D_p)(x_sigma_i) . d x0_i / d theta,   w = 1
Aux loss (EDM): lambda(sigma) ||D_q(x0 + sigma eps, sigma) - x0||^2 on x0 ~ G, summed over pixels / B.

Every deviation from the reference is a field of ``DIConfig``; the functions below read them, so one
code path runs every variant.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import DIConfig
from .noise_levels import sample_sigma
from .teachers import edm_denoising_loss
from .weightings import generator_weight

# Fixed score-gap bins in sigma (edges); the per-round diagnostics report E||s_q - s_p||^2 per bin.
SIGMA_BIN_EDGES = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0, math.inf)
SIGMA_BIN_NAMES = tuple(f"gap_s{lo:g}-{hi:g}" for lo, hi in zip(SIGMA_BIN_EDGES[:-1], SIGMA_BIN_EDGES[1:]))


@dataclass
class DINets:
    """The networks of one DI run. ``generator(z) -> x0``; ``aux`` and ``teacher`` expose
    ``denoise(x_sigma, sigma)`` and are nn.Modules (train/eval switch dropout)."""

    generator: nn.Module
    aux: nn.Module
    teacher: nn.Module
    latent_shape: tuple[int, ...]

    def sample_latent(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((batch, *self.latent_shape), device=device, generator=generator)


# ----------------------------------------------------------------------------------------------
# Small pure functions


def ported_gap(port: str, d_q: torch.Tensor, d_p: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The gap the generator gradient multiplies, as an eps-parameterised port computes it (DIConfig.eps_port).
    Both networks' eps = (x_sigma - D) / sigma, so eps_q - eps_p = (D_p - D_q) / sigma; only ``exact`` is right."""
    if port == "exact":
        return d_q - d_p
    s = sigma.to(d_q.dtype).reshape(-1, *([1] * (d_q.dim() - 1)))
    eps_gap = (d_p - d_q) / s  # eps_q - eps_p
    if port == "sign_flipped":
        return s * eps_gap  # correct: -sigma (eps_q - eps_p)
    if port == "no_sigma":
        return -eps_gap
    if port == "eps_as_score":
        return s**2 * eps_gap  # sigma^2 (s_q - s_p) with eps in place of the score
    raise ValueError(port)


def to_teacher_range(x0: torch.Tensor, generator_range: str) -> torch.Tensor:
    """What DI sees of G's output (DIConfig.generator_range): as is, or mapped from [-1, 1] to [0, 1]."""
    return x0 if generator_range == "pm1" else (x0 + 1) / 2


@torch.no_grad()
def clean_grads_(params) -> None:
    """The release's clean-up: NaN -> 0, +inf -> 1e5, -inf -> -1e5, in place."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)


def grad_norm(params) -> float:
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(norms).norm().item() if norms else 0.0


def save_rng(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _step(optimiser: torch.optim.Optimizer, params: list, cfg: DIConfig) -> float:
    """NaN clean-up, optional clipping, optimiser step; returns the (pre-clip) grad norm."""
    if cfg.nan_cleanup:
        clean_grads_(params)
    norm = grad_norm(params)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimiser.step()
    return norm


# ----------------------------------------------------------------------------------------------
# The two steps


def aux_step(cfg: DIConfig, nets: DINets, opt_aux: torch.optim.Optimizer, z: torch.Tensor,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict:
    """Step 1 of a round: fit D_q to the current generator's samples (denoising score matching).

    ``sigma`` / ``noise`` may be given (tests); otherwise drawn from cfg.aux_sigma and N(0, I).
    Returns diagnostics: aux_loss, teacher_loss (the teacher's loss on the same noisy batch), aux_grad_norm.
    """
    G, aux, teacher = nets.generator, nets.aux, nets.teacher
    aux_params = [p for p in aux.parameters() if p.requires_grad]
    if cfg.aux_zero_grad:
        opt_aux.zero_grad(set_to_none=True)

    # Samples from G in eval mode under no_grad (the release toggles G.eval()/G.train() around this).
    g_frozen = cfg.freeze_order == "clean"
    if g_frozen:
        G.requires_grad_(False)
    G.train(cfg.generator_mode == "train")
    with torch.no_grad() if cfg.aux_batch_detach else contextlib.nullcontext():
        x0 = to_teacher_range(G(z), cfg.generator_range)
    G.train(cfg.generator_mode != "eval")
    if g_frozen:
        G.requires_grad_(True)

    b = x0.shape[0]
    sigma = sample_sigma(cfg.aux_sigma, b, x0.device) if sigma is None else sigma
    noise = torch.randn_like(x0) if noise is None else noise
    aux.train(cfg.freeze_order != "clean")  # clean: no dropout anywhere
    if cfg.aux_loss == "edm":
        per_sample = edm_denoising_loss(aux, x0, sigma, noise)
    else:  # the teacher's own training loss (e.g. Huber on eps); sigma/noise drawn by that loss
        per_sample = aux.loss(x0) * x0[0].numel()
    loss = per_sample.sum() * cfg.aux_loss_scale / b
    loss.backward()
    norm = _step(opt_aux, aux_params, cfg)
    aux.train()

    with torch.no_grad():  # diagnostic only: how well the *teacher* denoises the same generator batch
        was_training = teacher.training
        teacher.eval()
        teacher_loss = edm_denoising_loss(teacher, x0, sigma, noise).mean().item()
        teacher.train(was_training)
    return {"aux_loss": loss.item() / cfg.aux_loss_scale, "teacher_loss": teacher_loss, "aux_grad_norm": norm}


def generator_step(cfg: DIConfig, nets: DINets, opt_gen: torch.optim.Optimizer, z: torch.Tensor,
                   sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict:
    """Step 2 of a round: move G along w(sigma) (D_q - D_p) at x0 + sigma eps.

    Returns diagnostics: surrogate (the loss value), gen_grad_norm, and per-sample score_gap
    ||s_q - s_p||^2 and sigma (tensors) for binning.
    """
    G, aux, teacher = nets.generator, nets.aux, nets.teacher
    gen_params = [p for p in G.parameters() if p.requires_grad]
    device = z.device
    if cfg.gen_zero_grad:
        opt_gen.zero_grad(set_to_none=True)
    G.train(cfg.generator_mode != "eval")
    x0 = to_teacher_range(G(z), cfg.generator_range)
    b = x0.shape[0]
    sigma = sample_sigma(cfg.gen_sigma, b, device) if sigma is None else sigma
    noise = torch.randn_like(x0) if noise is None else noise
    s = sigma.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
    x_sigma = x0 + s * noise

    # Mode switching ("freeze/unfreeze order"). The release: Sg.eval(); Sg.train(); net.train(); ...; net.eval().
    sid = not cfg.detach_scores and cfg.sid_frozen_eval
    order = cfg.freeze_order
    teacher_train = order in ("reference", "independent_dropout") and not sid
    aux_train = order in ("reference", "independent_dropout", "teacher_eval") and not sid
    freeze_aux = order == "clean" or sid
    if freeze_aux:
        aux.requires_grad_(False)
    teacher.train(teacher_train)
    aux.train(aux_train)
    share_masks = order == "reference"

    if cfg.detach_scores:
        grad_ctx = torch.inference_mode() if cfg.inference_frozen else torch.no_grad()
        x_in = x_sigma.detach()
    else:
        grad_ctx, x_in = torch.enable_grad(), x_sigma
    if cfg.channels_last and x_in.dim() == 4:
        x_in = x_in.contiguous(memory_format=torch.channels_last)
    with grad_ctx, torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.autocast_bf16):
        rng = save_rng(device) if share_masks else None
        d_p = teacher.denoise(x_in, sigma)
        if share_masks:
            restore_rng(rng, device)  # same dropout masks in D_q as in D_p
        d_q = aux.denoise(x_in, sigma)
    teacher.eval()
    if cfg.detach_scores:  # plain float32 constants (inference tensors cannot be saved for backward)
        d_p, d_q = d_p.float().clone(), d_q.float().clone()
    else:
        d_p, d_q = d_p.float(), d_q.float()

    w = generator_weight(cfg.weighting, sigma.to(x0.dtype), x0, d_p.detach()).reshape(-1, *([1] * (x0.dim() - 1)))
    gap = ported_gap(cfg.eps_port, d_q, d_p, sigma)
    per_sample = (w * gap * x0).flatten(1).sum(1) * cfg.gen_loss_scale
    loss = per_sample.sum() / b
    loss.backward()
    aux.train()
    if freeze_aux:
        aux.requires_grad_(True)
    norm = _step(opt_gen, gen_params, cfg)

    with torch.no_grad():
        score_gap = ((d_q - d_p).detach().flatten(1).pow(2).sum(1)) / sigma.to(x0.dtype) ** 4
    return {"surrogate": loss.item(), "gen_grad_norm": norm, "score_gap": score_gap, "sigma": sigma.detach()}


def bin_score_gap(score_gap: torch.Tensor, sigma: torch.Tensor) -> dict:
    """Mean score gap per fixed sigma bin (NaN for empty bins)."""
    out = {}
    for name, lo, hi in zip(SIGMA_BIN_NAMES, SIGMA_BIN_EDGES[:-1], SIGMA_BIN_EDGES[1:]):
        mask = (sigma >= lo) & (sigma < hi)
        out[name] = score_gap[mask].mean().item() if mask.any() else float("nan")
    return out
