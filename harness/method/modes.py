"""Train/eval modes and frozen parameters of the three networks around each step, and what DI sees of G's output.

Three registries, each keyed by the values of one ``DIConfig`` field, so that the steps read a table instead of
branching on strings (adding a variant is one entry):

* ``FREEZE_ORDERS`` (``freeze_order``): which nets are in train mode (dropout on) and which are frozen in each step,
  and whether the teacher's and the aux net's dropout masks are shared.
* ``GENERATOR_MODES`` (``generator_mode``): G's mode while it makes the aux batch and in its own step (BatchNorm of
  the DCGAN, dropout of a one-step UNet).
* ``GENERATOR_RANGES`` (``generator_range``): x0 as DI sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class FreezeOrder:
    teacher_train: bool  # teacher in train mode (dropout) for the generator step's score evaluations
    aux_train: bool  # aux net in train mode for the generator step's score evaluations
    share_masks: bool  # the RNG saved before D_p and restored before D_q: identical dropout masks in both
    frozen_nets: bool  # aux frozen (and eval) in the generator step, G frozen in the aux step, aux eval in its own
    description: str = ""


FREEZE_ORDERS = {
    "reference": FreezeOrder(True, True, True, False,
                             "teacher and aux in train mode with shared dropout masks for the generator step"),
    "clean": FreezeOrder(False, False, False, True, "no dropout in any score evaluation; each step freezes the "
                                                    "nets it does not train"),
    "independent_dropout": FreezeOrder(True, True, False, False, "reference without the RNG restore: different "
                                                                 "masks add noise to D_q - D_p"),
    "teacher_eval": FreezeOrder(False, True, False, False, "teacher eval, aux train"),
}


@dataclass(frozen=True)
class GeneratorMode:
    sampling_train: bool  # G's mode while it makes the aux step's batch
    step_train: bool  # G's mode in its own step (and between steps)


GENERATOR_MODES = {
    "reference": GeneratorMode(sampling_train=False, step_train=True),
    "train": GeneratorMode(sampling_train=True, step_train=True),
    "eval": GeneratorMode(sampling_train=False, step_train=False),
}

# x0 as DI sees G's tanh output: as is (the range the teachers were trained on) or mapped to [0, 1] (a port that
# mixes a [0, 1] data pipeline with a [-1, 1] teacher).
GENERATOR_RANGES: dict[str, Callable] = {
    "pm1": lambda x0: x0,
    "01": lambda x0: (x0 + 1) / 2,
}


def to_teacher_range(x0, generator_range: str):
    """What DI sees of G's output (DIConfig.generator_range)."""
    return GENERATOR_RANGES[generator_range](x0)
