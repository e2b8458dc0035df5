"""Diff-Instruct's two steps: fit the fake score (aux step), then move the generator (generator step).

``harness.method.loop.train`` calls these every round. They hold the plumbing only: train/eval modes and frozen nets
(harness.method.modes), the RNG around shared dropout masks, autocast, zeroing, NaN clean-up, clipping and the optimiser
step. What is minimised comes from two registries: the aux loss (harness.method.aux_losses, ``DIConfig.aux_loss``) and
the generator objective (harness.method.objectives, ``DIConfig.objective``).

Symbols (docs/reference-loop.md):
    G        one-step generator, x0 = G(z)                     (theta; ``G`` in the release)
    D_q      auxiliary ("fake") denoiser on generator samples  (phi;   ``Sg``)
    D_p      teacher denoiser                                  (       ``net``)
    sigma    VE noise level, x_sigma = x0 + sigma * eps
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from harness.method.aux_losses import AUX_LOSSES
from harness.method.modes import FREEZE_ORDERS, GENERATOR_MODES, to_teacher_range
from harness.method.noise_levels import sample_sigma
from harness.method.objectives import OBJECTIVES
from harness.method.precision import PRECISIONS, full_precision, network_passes
from harness.method.teachers import edm_denoising_loss

if TYPE_CHECKING:  # annotations only: the config validates against these modules' registries
    from harness.method.config import DIConfig


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
# What an objective sees of the score networks


class ScoreNets:
    """The teacher D_p and the fake score D_q as the generator step's objective may use them.

    ``sigma(dist, b)`` and ``noise(x0)`` draw the noise (or return the values a test passed in); ``denoise(x_sigma,
    sigma) -> (D_p, D_q)`` evaluates both nets (D_q is None for an objective without a fake score) with the config's
    plumbing: their train/eval modes and frozen parameters (freeze_order), shared dropout masks, gradients through the
    nets or not (detach_scores, and the objective's own declaration), inference mode, channels_last and bf16 autocast.
    Detached outputs come back as float32 constants. ``restore()`` puts the aux net back (train mode, trainable) after
    the backward."""

    def __init__(self, cfg: DIConfig, nets: DINets, device: torch.device, sigma=None, noise=None):
        self.cfg, self.nets, self.device = cfg, nets, device
        self._sigma, self._noise = sigma, noise
        self.teacher, self.aux = nets.teacher, nets.aux
        order = FREEZE_ORDERS[cfg.freeze_order]
        self.detach = cfg.detach_scores and not OBJECTIVES[cfg.objective].differentiates_scores
        sid = not self.detach and cfg.sid_frozen_eval  # SiD: backpropagate through frozen nets in eval mode
        self.teacher_train = order.teacher_train and not sid
        self.aux_train = order.aux_train and not sid
        self.freeze_aux = order.frozen_nets or sid
        self.share_masks = order.share_masks
        self.fake = OBJECTIVES[cfg.objective].needs_fake_score  # without a fake score, D_q is never evaluated

    def sigma(self, dist, b: int) -> torch.Tensor:
        return sample_sigma(dist, b, self.device) if self._sigma is None else self._sigma

    def noise(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(x0) if self._noise is None else self._noise

    def denoise(self, x_sigma: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, teacher, aux = self.cfg, self.teacher, self.aux
        # Mode switching ("freeze/unfreeze order"). The release: Sg.eval(); Sg.train(); net.train(); ...; net.eval().
        if self.freeze_aux:
            aux.requires_grad_(False)
        teacher.train(self.teacher_train)
        aux.train(self.aux_train)
        if self.detach:
            grad_ctx = torch.inference_mode() if cfg.inference_frozen else torch.no_grad()
            x_in = x_sigma.detach()
        else:
            grad_ctx, x_in = torch.enable_grad(), x_sigma
        if cfg.channels_last and x_in.dim() == 4:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        bf16 = cfg.autocast_bf16 or PRECISIONS[cfg.precision].autocast_dtype == torch.bfloat16
        with grad_ctx, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            rng = save_rng(self.device) if self.share_masks and self.fake else None
            d_p = teacher.denoise(x_in, sigma)
            if rng is not None:
                restore_rng(rng, self.device)  # same dropout masks in D_q as in D_p
            d_q = aux.denoise(x_in, sigma) if self.fake else None
        teacher.eval()
        if self.detach:  # plain float32 constants (inference tensors cannot be saved for backward)
            return d_p.float().clone(), None if d_q is None else d_q.float().clone()
        return d_p.float(), None if d_q is None else d_q.float()

    def restore(self) -> None:
        self.aux.train()
        if self.freeze_aux:
            self.aux.requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# The two steps


def aux_step(cfg: DIConfig, nets: DINets, opt_aux: torch.optim.Optimizer, z: torch.Tensor,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict:
    """Step 1 of a round: fit D_q to the current generator's samples with the aux loss ``cfg.aux_loss``.

    ``sigma`` / ``noise`` may be given (tests); otherwise drawn from cfg.aux_sigma and N(0, I).
    Returns diagnostics: aux_loss, teacher_loss (the teacher's EDM loss on the same noisy batch), aux_grad_norm.
    """
    G, aux, teacher = nets.generator, nets.aux, nets.teacher
    aux_params = [p for p in aux.parameters() if p.requires_grad]
    order, g_mode = FREEZE_ORDERS[cfg.freeze_order], GENERATOR_MODES[cfg.generator_mode]
    if cfg.aux_zero_grad:
        opt_aux.zero_grad(set_to_none=True)

    # Samples from G under no_grad (the release toggles G.eval()/G.train() around this).
    if order.frozen_nets:
        G.requires_grad_(False)
    G.train(g_mode.sampling_train)
    passes = network_passes(cfg.precision, z.device)
    with torch.no_grad() if cfg.aux_batch_detach else contextlib.nullcontext(), passes:
        x0 = full_precision(to_teacher_range(G(z), cfg.generator_range))  # DI's arithmetic in float32
    G.train(g_mode.step_train)
    if order.frozen_nets:
        G.requires_grad_(True)

    b = x0.shape[0]
    sigma = sample_sigma(cfg.aux_sigma, b, x0.device) if sigma is None else sigma
    noise = torch.randn_like(x0) if noise is None else noise
    aux.train(not order.frozen_nets)  # frozen_nets (clean): no dropout anywhere
    with network_passes(cfg.precision, z.device):
        per_sample = full_precision(AUX_LOSSES[cfg.aux_loss].loss(aux, x0, sigma, noise))
    loss = per_sample.sum() * cfg.aux_loss_scale / b
    loss.backward()
    norm = _step(opt_aux, aux_params, cfg)
    aux.train()

    with torch.no_grad():  # diagnostic only: how well the *teacher* denoises the same generator batch
        was_training = teacher.training
        teacher.eval()
        with network_passes(cfg.precision, z.device):
            teacher_loss = full_precision(edm_denoising_loss(teacher, x0, sigma, noise)).mean().item()
        teacher.train(was_training)
    return {"aux_loss": loss.item() / cfg.aux_loss_scale, "teacher_loss": teacher_loss, "aux_grad_norm": norm}


def generator_step(cfg: DIConfig, nets: DINets, opt_gen: torch.optim.Optimizer, z: torch.Tensor,
                   sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None) -> dict:
    """Step 2 of a round: one optimiser step of G on the objective ``cfg.objective``.

    Returns the objective's statistics plus ``surrogate`` (the loss value) and ``gen_grad_norm``; per-sample
    statistics are tensors (the loop reduces a round's with the objective's ``summarise``).
    """
    G = nets.generator
    objective = OBJECTIVES[cfg.objective]
    gen_params = [p for p in G.parameters() if p.requires_grad]
    if cfg.gen_zero_grad:
        opt_gen.zero_grad(set_to_none=True)
    G.train(GENERATOR_MODES[cfg.generator_mode].step_train)
    with network_passes(cfg.precision, z.device):
        x0 = full_precision(to_teacher_range(G(z), cfg.generator_range))  # the objective's arithmetic in float32
    scores = ScoreNets(cfg, nets, z.device, sigma, noise)
    per_sample, stats = objective.loss(cfg, scores, x0)
    loss = (per_sample * cfg.gen_loss_scale).sum() / x0.shape[0]
    loss.backward()
    scores.restore()
    norm = _step(opt_gen, gen_params, cfg)
    return {"surrogate": loss.item(), "gen_grad_norm": norm, **stats}


def round_statistics(steps: list[dict], summarise) -> dict:
    """One round's statistics from its steps' dicts: each scalar averaged over the steps, the per-sample tensors
    concatenated and reduced by ``summarise`` (an objective's), in the order the steps returned them."""
    if not steps:
        return {}
    scalars = [k for k, v in steps[0].items() if not torch.is_tensor(v)]
    out = {k: sum(s[k] for s in steps) / len(steps) for k in scalars}
    per_sample = {k: torch.cat([s[k] for s in steps]) for k, v in steps[0].items() if torch.is_tensor(v)}
    if per_sample:
        out.update(summarise(per_sample))
    return out
