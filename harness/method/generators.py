"""The generators G a DI run can name (``DIConfig.generator``): x0 = G(z), z ~ N(0, I) of the entry's latent shape.

- ``onestep``: the paper's setting, a copy of the teacher's denoiser called once at ``init_sigma``.
- ``gan-weak`` / ``gan-strong`` / ``gan-wide``: the shipped DCGANs, z ~ N(0, I_128) (our GAN adaptation; seed 000
  used a weak one): 3 epochs, 10 epochs, and 3 epochs at twice the width (capacity, not training length).
- ``toy-mlp``: the exact-score toy's MLP generator (harness.testbed.toy).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.testbed.assets import load_network
from harness.testbed.toy import MLPGenerator


class OneStepGenerator(nn.Module):
    """The paper's generator: a copy of the teacher denoiser called once, x0 = D(init_sigma * z, init_sigma)."""

    def __init__(self, denoiser: nn.Module, init_sigma: float):
        super().__init__()
        self.denoiser, self.init_sigma = denoiser, init_sigma

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        sigma = torch.full((z.shape[0],), self.init_sigma, device=z.device, dtype=z.dtype)
        return self.denoiser.denoise(self.init_sigma * z, sigma)


@dataclass(frozen=True)
class NamedGenerator:
    build: Callable  # (cfg, teacher, asset_dir) -> (G, the shape of one latent z)
    asset: str | None = None  # the shipped checkpoint it loads


def _one_step(cfg, teacher: nn.Module, asset_dir=None):
    return OneStepGenerator(copy.deepcopy(teacher), cfg.init_sigma), (1, 28, 28)


def _shipped_gan(name: str) -> NamedGenerator:
    def build(cfg, teacher, asset_dir=None):
        generator, config = load_network(name, asset_dir)
        return generator, (config["net"]["latent_dim"],)

    return NamedGenerator(build, asset=name)


def _toy_mlp(cfg, teacher, asset_dir=None):
    generator = MLPGenerator()
    return generator, (generator.latent_dim,)


# Registry: name -> generator. Its keys are the values DIConfig.generator accepts, in this order.
GENERATORS = {
    "onestep": NamedGenerator(_one_step),
    "gan-weak": _shipped_gan("gan-weak"),
    "gan-strong": _shipped_gan("gan-strong"),
    "gan-wide": _shipped_gan("gan-wide"),
    "toy-mlp": NamedGenerator(_toy_mlp),
}
