"""The generator objectives: what the generator step minimises (``DIConfig.objective``).

Each objective is one module of this package that defines ``OBJECTIVE = Objective(...)``; the registry
``OBJECTIVES`` collects them on import (no list to edit: a new module is a new objective, and the tests that
iterate the registry test it). The generator step (``harness.method.steps.generator_step``) does the plumbing: G's mode,
the RNG, autocast, the optimiser step. The objective gets G's samples x0 and the score networks behind a
``ScoreNets`` handle and returns

    per-sample losses (B,)   the step backpropagates their mean (times ``gen_loss_scale``)
    statistics               scalars (floats) and per-sample tensors; the loop logs every scalar in rounds.csv
                             and reduces the per-sample tensors of a round with ``Objective.summarise``.

What an objective declares lets the config and the loop check and build what it needs:
    needs_fake_score      a fake-score (aux) net fitted each round (False: SDS-like, aux_steps may be 0)
    differentiates_scores gradients flow through the score nets into x_sigma by design (SiD-like)
    extra_networks        names of further trained networks (a discriminator head, say)
    extra_data            names of further inputs (teacher sampler pairs, say)
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Objective:
    name: str
    loss: Callable  # (cfg, scores: ScoreNets, x0) -> (per-sample loss (B,), statistics dict)
    description: str
    needs_fake_score: bool = True
    differentiates_scores: bool = False
    extra_networks: tuple[str, ...] = ()
    extra_data: tuple[str, ...] = ()
    # per-sample statistics of a round's generator steps (concatenated) -> scalars for rounds.csv
    summarise: Callable[[dict], dict] = field(
        default=lambda per_sample: {k: v.mean().item() for k, v in per_sample.items()})


def _discover() -> dict[str, Objective]:
    """Every ``OBJECTIVE`` defined by a module of this package: ``di`` (the reference, the default) first, then
    the others by name."""
    found: dict[str, Objective] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        objective = getattr(importlib.import_module(f"{__name__}.{info.name}"), "OBJECTIVE", None)
        if isinstance(objective, Objective):
            if objective.name in found:
                raise RuntimeError(f"two objectives named {objective.name!r}")
            found[objective.name] = objective
    return dict(sorted(found.items(), key=lambda item: (item[0] != "di", item[0])))


# Registry: DIConfig.objective -> Objective (filled here, after Objective exists for the modules to import).
OBJECTIVES: dict[str, Objective] = _discover()
