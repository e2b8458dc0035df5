"""Network architectures: a small UNet backbone for the diffusion teachers, the DCGAN pair, and the
FashionMNIST evaluator (classifier whose penultimate features define the metric space).

Every network is built from a plain dict of hyper-parameters through ``build(kind, **cfg)`` so a
checkpoint is ``state_dict + config`` and never pickled code.

Symbols: ``x`` an image batch (B, 1, 28, 28) in [-1, 1]; ``noise_label`` a per-sample scalar that
conditions the UNet (EDM's ``c_noise = ln(sigma) / 4`` or a DDPM timestep index scaled to [0, 1]).
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------
# UNet backbone (teachers)


def fourier_embedding(noise_label: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of a per-sample scalar: (B,) -> (B, dim)."""
    half = dim // 2
    label = noise_label if noise_label.is_floating_point() else noise_label.float()  # keeps float64 in tests
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=label.device, dtype=label.dtype) / half)
    angles = label[:, None] * freqs[None, :] * 1000.0 / 4.0  # label ~ O(1) -> angles spread
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the embedding, GroupNorm-SiLU-dropout-conv, residual skip.

    Dropout sits before the second conv as in the DDPM/EDM UNets; it is what makes train()/eval() and
    shared dropout masks matter in the reference Diff-Instruct loop.
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(8, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = nn.GroupNorm(min(8, c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Single-head self-attention over spatial positions (used only at the lowest resolution)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(8, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(attn.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Small UNet F(x, noise_label) -> same shape as x.

    Resolutions 28 -> 14 -> 7 (``len(channel_mult)`` levels), ``blocks_per_level`` residual blocks per
    level on the way down and ``blocks_per_level + 1`` on the way up (skip connections from every
    down block), self-attention at the lowest level when ``attention`` is set.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int = 1,
        dropout: float = 0.1,
        attention: bool = True,
    ):
        super().__init__()
        emb_dim = 4 * base_channels
        self.base_channels = base_channels
        self.emb_mlp = nn.Sequential(
            nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        c = base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(blocks_per_level):
                self.down.append(ResBlock(c, base_channels * mult, emb_dim, dropout))
                c = base_channels * mult
                skip_channels.append(c)
            if level < len(channel_mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # 28->14->7
                skip_channels.append(c)

        self.mid1 = ResBlock(c, c, emb_dim, dropout)
        self.mid_attn = SelfAttention(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb_dim, dropout)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(blocks_per_level + 1):
                self.up.append(ResBlock(c + skip_channels.pop(), base_channels * mult, emb_dim, dropout))
                c = base_channels * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out = nn.GroupNorm(min(8, c), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as the identity of the preconditioning
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor) -> torch.Tensor:
        emb = self.emb_mlp(fourier_embedding(noise_label, self.base_channels))
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                skip = skips.pop()
                if skip.shape[-1] != h.shape[-1]:  # 7 -> 14 upsample gives 14; odd sizes never occur here
                    raise RuntimeError("UNet skip/feature size mismatch")
                h = layer(torch.cat([h, skip], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ----------------------------------------------------------------------------------------------
# DCGAN pair (seed 000: latent 128, three upsampling conv layers, tanh output; mirrored D)


class DCGANGenerator(nn.Module):
    """z (B, latent_dim) -> x0 (B, 1, 28, 28) in [-1, 1]: linear to 4x4, then 4 -> 7 -> 14 -> 28."""

    def __init__(self, latent_dim: int = 128, width: int = 64):
        super().__init__()
        self.latent_dim = latent_dim
        w = width
        self.project = nn.Sequential(nn.Linear(latent_dim, 4 * w * 4 * 4), nn.BatchNorm1d(4 * w * 16), nn.ReLU())
        self.body = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 3, stride=2, padding=1),  # 4 -> 7
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1),  # 7 -> 14
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, stride=2, padding=1),  # 14 -> 28
            nn.Tanh(),
        )
        self.width = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(z.shape[0], 4 * self.width, 4, 4)
        return self.body(h)


class DCGANDiscriminator(nn.Module):
    """Mirror of the generator: 28 -> 14 -> 7 -> 4, then a linear logit."""

    def __init__(self, width: int = 64):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 4, stride=2, padding=1),  # 28 -> 14
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1),  # 14 -> 7
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),  # 7 -> 4
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2),
        )
        self.logit = nn.Linear(4 * w * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.body(x).flatten(1)).squeeze(1)


# ----------------------------------------------------------------------------------------------
# Evaluator: FashionMNIST classifier; its penultimate activations are the metric feature space


class FeatureClassifier(nn.Module):
    """A classifier ``conv -> features_head -> classifier`` whose penultimate activations are a metric space."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim): the space every sample-quality metric lives in."""
        return self.features_head(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Evaluator(FeatureClassifier):
    def __init__(self, width: int = 32, feature_dim: int = 128, num_classes: int = 10, dropout: float = 0.3):
        super().__init__()
        w = width
        self.conv = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.MaxPool2d(2),  # 14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.MaxPool2d(2),  # 7
        )
        self.features_head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * w * 49, feature_dim), nn.ReLU()
        )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))


class _ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(8, c_out), nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(8, c_out),
        )
        self.skip = nn.Identity() if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.body(x) + self.skip(x))


class ResNetEvaluator(FeatureClassifier):
    """A second FashionMNIST classifier, built differently from ``Evaluator`` on purpose (residual blocks,
    GroupNorm, SiLU, strided downsampling, global average pooling, 64-d features), so that a metric's verdict
    can be checked in a feature space that does not share the first one's inductive biases."""

    def __init__(self, width: int = 24, feature_dim: int = 64, num_classes: int = 10):
        super().__init__()
        w = width
        self.conv = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False), nn.GroupNorm(8, w), nn.SiLU(),
            _ResidualBlock(w, w, 1),
            _ResidualBlock(w, 2 * w, 2),  # 14
            _ResidualBlock(2 * w, 4 * w, 2),  # 7
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.features_head = nn.Sequential(nn.Linear(4 * w, feature_dim), nn.SiLU())
        self.classifier = nn.Linear(feature_dim, num_classes)


# ----------------------------------------------------------------------------------------------
# Registry: name -> constructor. Checkpoints store (kind, config) and rebuild through here.

REGISTRY = {
    "unet": UNet,
    "dcgan-g": DCGANGenerator,
    "dcgan-d": DCGANDiscriminator,
    "evaluator": Evaluator,
    "evaluator-resnet": ResNetEvaluator,
}


def build(kind: str, **config) -> nn.Module:
    if kind not in REGISTRY:
        raise ValueError(f"unknown network kind {kind!r}; known: {', '.join(sorted(REGISTRY))}")
    if "channel_mult" in config:
        config = {**config, "channel_mult": tuple(config["channel_mult"])}
    return REGISTRY[kind](**config)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
