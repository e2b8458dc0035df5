"""Evaluating a run's generator during training: the fixed latents, the curve and the start/final evaluations.

``EVAL_GENERATORS`` (``DIConfig.eval.generator``) says which generator is scored: the EMA of G (reference) or G.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from harness.method.steps import DINets
from harness.method.teachers import TEACHERS

if TYPE_CHECKING:  # annotations only: the config validates against these modules' registries
    from harness.method.config import DIConfig

# eval.generator -> (EMA of G, G) -> the generator scored (put in eval mode to sample).
EVAL_GENERATORS: dict[str, Callable] = {
    "ema": lambda g_ema, generator: g_ema,
    "raw": lambda g_ema, generator: generator,
}


class Evaluator:
    """Scores a generator on a fixed latent batch (the same z at every evaluation and, for one seed, in every
    variant, so changes are the generator's, not the sampling noise's).

    ``curve(G)``: the first ``eval_n`` latents, values only (curves, pruning). ``full(G)``: all ``final_eval_n``
    latents, every metric in every feature space with half-samples (the start and final evaluations), plus the
    curve values of its first ``eval_n`` samples, so every point of a curve has the same n."""

    def __init__(self, cfg: DIConfig, nets: DINets, asset_dir=None):
        self.cfg, self.toy = cfg, TEACHERS[cfg.teacher].analytic
        g = torch.Generator().manual_seed(10_000 + cfg.seed)
        self.z = torch.randn((max(cfg.eval.n, cfg.eval.final_n), *nets.latent_shape), generator=g)
        self.teacher = nets.teacher
        if not self.toy:
            from harness.evaluation.scoring import references

            self.refs = references(asset_dir)

    @torch.no_grad()
    def samples(self, generator: nn.Module, n: int, batch: int = 500) -> torch.Tensor:
        was = generator.training
        generator.eval()
        device = next(generator.parameters()).device
        out = torch.cat([generator(self.z[i : min(i + batch, n)].to(device)).cpu() for i in range(0, n, batch)])
        generator.train(was)
        return out

    def _score(self, x: torch.Tensor, half_samples: int):
        from harness.evaluation.scoring import Evaluation, evaluate_features, featurise_all

        if self.toy:
            from harness.testbed.toy import toy_metrics

            values = {k: float(v) for k, v in toy_metrics(x, self.teacher, seed=self.cfg.seed).items()}
            return Evaluation(n=len(x), values=values), None
        feats = featurise_all(x.clamp(-1, 1), self.refs)
        return evaluate_features(feats, self.refs, half_samples), feats

    def curve(self, generator: nn.Module) -> tuple[dict, torch.Tensor]:
        x = self.samples(generator, self.cfg.eval.n)
        return self._score(x, 0)[0].values, x

    def full(self, generator: nn.Module):
        """(Evaluation on final_eval_n samples with half-samples, curve values on the first eval_n, samples)."""
        from harness.evaluation.scoring import HALF_SAMPLES, evaluate_features

        x = self.samples(generator, self.cfg.eval.final_n)
        evaluation, feats = self._score(x, 0 if self.toy else HALF_SAMPLES)
        n = self.cfg.eval.n
        if self.toy:
            curve = self._score(x[:n], 0)[0].values if n != len(x) else evaluation.values
        else:
            curve = evaluate_features({s: (f[:n], p[:n]) for s, (f, p) in feats.items()}, self.refs, 0).values
        return evaluation, curve, x


def save_samples_figure(x: torch.Tensor, path: Path, title: str, teacher=None) -> None:
    """Images as a grid; the toy's 2-D points as a scatter over the teacher's modes."""
    from harness.common.figures import save_grid, save_points

    if x.dim() == 4:
        save_grid(x[:64], path, title=title)
    else:
        save_points(x[:2000], path, title, modes=teacher.means if teacher is not None else None)
