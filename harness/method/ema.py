"""Exponential moving average of network weights (EDM's half-life-in-images rule)."""

from __future__ import annotations

import torch


def ema_beta(batch: int, cur_nimg: int, halflife_kimg: float, rampup: float) -> float:
    """EDM's EMA: half-life in images, ramped up as a fraction of the images seen so far."""
    halflife_nimg = halflife_kimg * 1000
    if rampup > 0:
        halflife_nimg = min(halflife_nimg, cur_nimg * rampup)
    return 0.5 ** (batch / max(halflife_nimg, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, beta: float, copy_buffers: bool = True) -> None:
    """ema <- beta * ema + (1 - beta) * net for parameters; buffers (e.g. BatchNorm statistics) copied when asked."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p.detach(), 1 - beta)
    if copy_buffers:
        for b_ema, b in zip(ema.buffers(), net.buffers()):
            b_ema.copy_(b)
