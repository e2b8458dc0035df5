"""Evaluate a sampler in the evaluator's feature space against the test split's feature bank.

``sample_fn(z) -> x0`` maps a batch of standard normal noise to images in [-1, 1]; for a GAN ``z`` is
(B, latent_dim), for a teacher it is (B, 1, 28, 28).
"""

from __future__ import annotations

import time

import torch

from harness.testbed import assets
from harness.evaluation import metrics


def generate(sample_fn, n: int, shape: tuple[int, ...], seed: int, batch_size: int = 500) -> tuple[torch.Tensor, float]:
    """n samples (clamped to [-1, 1]) from deterministic noise; returns (images, ms per image)."""
    g = torch.Generator().manual_seed(seed)
    out, t0 = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            out.append(sample_fn(torch.randn((b, *shape), generator=g)).clamp(-1, 1))
    return torch.cat(out), 1000 * (time.perf_counter() - t0) / n


@torch.no_grad()
def featurise(evaluator: torch.nn.Module, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, predicted classes) of images under the evaluator."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = evaluator.features(images[i : i + batch_size])
        feats.append(f)
        preds.append(evaluator.classifier(f).argmax(1))
    return torch.cat(feats), torch.cat(preds)


def evaluate_images(images: torch.Tensor, seed: int = 0, asset_dir=None, evaluator=None, bank=None) -> dict:
    evaluator = evaluator if evaluator is not None else assets.load_network("evaluator", asset_dir)[0]
    bank = bank if bank is not None else assets.load_feature_bank(asset_dir)
    feats, preds = featurise(evaluator, images)
    return metrics.compute_all(bank["features"], feats, fake_class_pred=preds, seed=seed)


def evaluate_sampler(sample_fn, n: int, latent_dim: int | None = None, seed: int = 0, asset_dir=None,
                     batch_size: int = 500) -> dict:
    shape = (latent_dim,) if latent_dim else (1, 28, 28)
    images, ms = generate(sample_fn, n, shape, seed, batch_size)
    result = evaluate_images(images, seed=seed, asset_dir=asset_dir)
    result["ms_per_image"] = ms
    return result
