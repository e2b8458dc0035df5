"""The numeric precision of a run's network passes (``DIConfig.precision``).

``fp32`` (the reference) runs every pass in float32. ``bf16`` runs every network pass (the aux step's forward, hence
its backward; G's forward in both steps; the teacher's and the fake score's evaluations) under bfloat16 autocast:
convolutions and matrix products in bf16, while the weights, their gradients and the optimiser state stay float32
(autocast casts the inputs of each op, never the parameters), and everything DI computes from the networks' outputs
(x0, the noise, sigma, the gap, the losses) is float32. The evaluations of a run stay float32: they are the
measuring instrument, and a table compares their numbers across runs. Adding a precision is one entry.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None  # None: no autocast
    description: str = ""


PRECISIONS = {
    "fp32": Precision(None, "every pass in float32 (reference)"),
    "bf16": Precision(torch.bfloat16, "every network pass under bfloat16 autocast; float32 weights, gradients, "
                                      "optimiser state and DI arithmetic"),
}


def network_passes(precision: str, device: torch.device):
    """The context a network pass of the training steps runs in."""
    dtype = PRECISIONS[precision].autocast_dtype
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """A network output as DI's arithmetic takes it: float32 when a pass ran in a low precision, else unchanged (a
    float64 test network stays float64)."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t
