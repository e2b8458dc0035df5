"""Convergence diagnostics of a DI run that the loss curves cannot show.

Should the generator gradient go to 0? At the optimum q = p the *expected* gradient is 0, but each batch's
gradient is an estimate: sigma, the noise and z are drawn afresh, and the aux net is itself a noisy fit of the
generator's score. The norm of one batch's gradient therefore levels off at a noise floor instead of reaching 0.
What does go to 0 is the mean over independent batches: for K batches with expectation 0 its norm falls as
1/sqrt(K) of one batch's norm. ``gradient_signal`` measures exactly that ratio without changing the run.
"""

from __future__ import annotations

import math

import torch

from harness.method.config import DIConfig
from harness.method.steps import DINets, generator_step, restore_rng, save_rng


def gradient_signal(cfg: DIConfig, nets: DINets, batches: int = 8) -> dict[str, float]:
    """Generator gradients on ``batches`` independent batches, then everything put back as it was (parameters
    untouched, .grad, BatchNorm buffers and the RNG restored), so a run with this diagnostic trains exactly as
    one without it.

    Returns ``grad_norm_batch`` (mean norm of one batch's gradient), ``grad_norm_mean`` (norm of their mean) and
    ``grad_signal`` = grad_norm_mean / grad_norm_batch * sqrt(batches): about 1 when the expected gradient is 0
    (pure estimator noise), about sqrt(batches) when every batch points the same way."""
    G = nets.generator
    params = [p for p in G.parameters() if p.requires_grad]
    device = next(G.parameters()).device
    saved_grads = [None if p.grad is None else p.grad.clone() for p in params]
    saved_buffers = {k: v.clone() for k, v in G.state_dict().items() if not any(k == n for n, _ in G.named_parameters())}
    rng = save_rng(device)
    was_training = G.training
    probe = torch.optim.SGD(params, lr=0.0)  # a step of size 0: the gradient is computed, nothing moves
    flat = []
    for _ in range(batches):
        for p in params:
            p.grad = None
        generator_step(cfg, nets, probe, nets.sample_latent(cfg.batch_size, device).to(params[0].dtype))
        flat.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]))
    for p, g in zip(params, saved_grads):
        p.grad = g
    G.load_state_dict({**G.state_dict(), **saved_buffers})
    G.train(was_training)
    restore_rng(rng, device)
    grads = torch.stack(flat).double()
    per_batch = grads.norm(dim=1).mean().item()
    of_mean = grads.mean(0).norm().item()
    return {"grad_norm_batch": per_batch, "grad_norm_mean": of_mean,
            "grad_signal": of_mean / per_batch * math.sqrt(batches) if per_batch > 0 else float("nan")}
