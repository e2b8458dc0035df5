"""Building a run: its device, networks and optimisers, and the check that its shipped assets exist.

Registries here: ``AUX_INITS`` (``DIConfig.aux_init``: how the fake-score net starts) and ``DEVICES``
(``DIConfig.device``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import copy
from typing import Callable

import torch
from torch import nn

from harness.testbed import assets
from harness.method.generators import GENERATORS
from harness.method.steps import DINets
from harness.method.teachers import TEACHERS

if TYPE_CHECKING:  # annotations only: the config validates against these modules' registries
    from harness.method.config import DIConfig

# aux_init -> (teacher, builder of an untrained denoiser of its architecture) -> the aux net D_q.
AUX_INITS: dict[str, Callable] = {
    "teacher": lambda teacher, untrained: copy.deepcopy(teacher),  # the first generator gradient is exactly 0
    "scratch": lambda teacher, untrained: untrained(),  # same architecture, fresh weights
}


def _cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise ValueError("device=cuda asked for but CUDA is not available")
    return torch.device("cuda")


# device -> the torch device it resolves to.
DEVICES: dict[str, Callable[[], torch.device]] = {
    "auto": lambda: torch.device("cuda" if torch.cuda.is_available() else "cpu"),
    "cpu": lambda: torch.device("cpu"),
    "cuda": _cuda,
}


def resolve_device(cfg: DIConfig) -> torch.device:
    """The run's device; on CUDA, TF32 is switched off as the release does (fp32 numerics on every GPU)."""
    device = DEVICES[cfg.device]()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def required_assets(cfg: DIConfig) -> list[str]:
    """Shipped assets a run needs (none for the toy, which scores without feature spaces)."""
    if TEACHERS[cfg.teacher].analytic:
        return []
    from harness.evaluation.scoring import required_assets as scoring_assets

    names = [TEACHERS[cfg.teacher].asset, *scoring_assets(), GENERATORS[cfg.generator].asset]
    return [name for name in names if name]


def check_assets(cfg: DIConfig, asset_dir=None) -> None:
    """Fail fast, with one line, before any work: every asset the run needs is present."""
    for name in required_assets(cfg):
        path = assets.asset_dir(asset_dir) / f"{name}.pt"
        if not path.is_file():
            raise assets.AssetNotFoundError(f"asset {name!r} not found at {path}; regenerate it with "
                                            f"`python -m harness.pretrain` or point HARNESS_ASSETS at a directory that has it")


def build_nets(cfg: DIConfig, asset_dir=None) -> DINets:
    """Teacher (frozen), generator and aux networks as the config asks (registries: harness.method.teachers.TEACHERS,
    harness.method.generators.GENERATORS, AUX_INITS)."""
    named_teacher = TEACHERS[cfg.teacher]
    teacher, untrained_denoiser = named_teacher.load(cfg, asset_dir)

    def make_aux() -> nn.Module:
        return AUX_INITS[cfg.aux_init](teacher, untrained_denoiser)

    build_generator = GENERATORS[cfg.generator].build
    # A fresh network draws its initial weights from the global RNG, so the build order is part of what a seed
    # gives: the toy has always built G before D_q, the image settings D_q before G.
    if named_teacher.analytic:
        generator, latent = build_generator(cfg, teacher, asset_dir)
        aux = make_aux()
    else:
        aux = make_aux()
        generator, latent = build_generator(cfg, teacher, asset_dir)
    teacher.eval().requires_grad_(False)
    aux.train().requires_grad_(True)
    generator.train().requires_grad_(True)
    if cfg.channels_last and not named_teacher.analytic:
        for net in (teacher, aux, generator):
            net.to(memory_format=torch.channels_last)
    if cfg.compile:  # compile the forwards, not the modules, so state_dict keys (checkpoints) are unchanged
        for den in (teacher, aux):
            den.net.forward = torch.compile(den.net.forward)
    return DINets(generator=generator, aux=aux, teacher=teacher, latent_shape=latent)


def make_optimisers(cfg: DIConfig, nets: DINets):
    opt_aux = torch.optim.Adam(nets.aux.parameters(), lr=cfg.lr_aux, betas=cfg.betas_aux, eps=1e-8)
    opt_gen = torch.optim.Adam(nets.generator.parameters(), lr=cfg.lr_gen, betas=cfg.betas_gen, eps=1e-8)
    return opt_aux, opt_gen
