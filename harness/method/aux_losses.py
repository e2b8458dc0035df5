"""The fake-score (aux) losses: how D_q is fitted to the current generator's samples (``DIConfig.aux_loss``).

Each entry is ``loss(aux, x0, sigma, noise) -> per-sample loss (B,)`` (summed over pixels); the aux step draws
sigma from ``cfg.aux_sigma`` and the noise before it calls the loss (the ``teacher`` loss ignores them and draws
its own t and noise, as the teacher's training did). Adding a loss is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from harness.method.teachers import edm_denoising_loss


@dataclass(frozen=True)
class AuxLoss:
    loss: Callable[..., torch.Tensor]  # (aux, x0, sigma, noise) -> (B,)
    needs_trained_teacher: bool = False  # a loss of the teacher's own kind: not defined for the analytic toy
    description: str = ""


def _teachers_own(aux, x0, sigma, noise):
    # The teacher's own training loss (e.g. Huber on eps), mean over pixels; it draws its own t and noise.
    return aux.loss(x0) * x0[0].numel()


AUX_LOSSES = {
    "edm": AuxLoss(edm_denoising_loss, description="lambda(sigma)-weighted x0 regression (reference)"),
    "teacher": AuxLoss(_teachers_own, needs_trained_teacher=True,
                       description="the teacher's own training loss on eps (Huber for ddpm-huber)"),
}
