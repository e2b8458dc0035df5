"""Presets: named configs. Everything a preset does not list is the reference loop's default (harness.method.config)."""

from __future__ import annotations

from typing import Any

from harness.method.config import LEGACY_NAMES, ConfigError, DIConfig, EvalConfig, NoiseDist
from harness.method.overrides import apply_overrides

PRESETS: dict[str, dict[str, Any]] = {
    "reference-onestep": {"teacher": "edm", "generator": "onestep"},
    # GAN adaptation: the DCGAN's BatchNorm running statistics follow G into its EMA (see ema_copy_buffers).
    "reference-gan": {"teacher": "edm", "generator": "gan-weak", "ema_copy_buffers": True},
    # Seed 000 as reported: their DDPM teacher (T=2000, Huber), their 3-epoch DCGAN, batch 128, one aux and one
    # generator update per round (Algorithm 1's default; their other "round strategies" are the aux_steps /
    # gen_steps toggles), and otherwise "as close as the original" loop. Their lrs are not reported.
    "seed-report": {"teacher": "ddpm-huber", "generator": "gan-weak", "batch_size": 128, "aux_steps": 1, "gen_steps": 1,
                    "ema_copy_buffers": True},
    "toy": {"teacher": "toy-gmm", "generator": "toy-mlp", "batch_size": 256, "rounds": 1500, "aux_init": "scratch",
            "aux_warmup_steps": 200, "lr_aux": 1e-3, "lr_gen": 1e-3, "ema_halflife_kimg": 5.0,
            "eval": EvalConfig(every=500, n=4000, final_n=4000), "aux_sigma": NoiseDist(sigma_min=0.01, sigma_max=5.0),
            "gen_sigma": NoiseDist(sigma_min=0.01, sigma_max=5.0)},
}


def preset(name: str, **overrides) -> DIConfig:
    """The preset ``name`` with fields replaced by ``overrides`` (a grouped field's old name, ``eval_n=100``, too)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    legacy = {k: overrides.pop(k) for k in list(overrides) if k in LEGACY_NAMES}
    cfg = DIConfig(preset=name, **{**PRESETS[name], **overrides})
    return apply_overrides(cfg, legacy) if legacy else cfg
