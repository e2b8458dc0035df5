"""Shipped pretrained assets: small checkpoints (state_dict + config, never pickled code) and their
manifest, so DI runs and studies need neither the dataset nor any training on a fresh machine.

Files live in ``harness/assets/`` (installed as package data):
    <name>.pt        {"kind", "config", "state_dict"}  (loadable with torch.load(weights_only=True))
    manifest.json    {name: manifest entry with command, config, seed, git commit, data checksum,
                      device, wall time, parameter count and the asset's own metrics}
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import torch

from harness.common.manifest import write_json
from harness.method.networks import build

ASSET_DIR = Path(__file__).resolve().parents[1] / "assets"  # harness/assets/ (package data)


class AssetNotFoundError(FileNotFoundError):
    """A shipped checkpoint is missing."""


def asset_dir(override: str | os.PathLike | None = None) -> Path:
    return Path(override or os.environ.get("HARNESS_ASSETS") or ASSET_DIR)


def save_asset(name: str, kind: str, config: dict, state_dict: dict, manifest_entry: dict,
               directory: str | os.PathLike | None = None) -> Path:
    d = asset_dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.pt"
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"kind": kind, "config": config, "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}}, tmp)
    tmp.replace(path)
    # Several pretrain jobs may finish at once: serialise the read-modify-write of the manifest.
    with open(d / ".manifest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = read_manifest(d)
        manifest[name] = {**manifest_entry, "file": path.name, "bytes": path.stat().st_size}
        write_json(d / "manifest.json", dict(sorted(manifest.items())))
    return path


def read_manifest(directory: str | os.PathLike | None = None) -> dict:
    path = asset_dir(directory) / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def load_raw(name: str, directory: str | os.PathLike | None = None) -> dict:
    path = asset_dir(directory) / f"{name}.pt"
    if not path.is_file():
        raise AssetNotFoundError(f"asset {name!r} not found at {path}; regenerate it with `python -m harness.pretrain` "
                                 f"or point HARNESS_ASSETS at a directory that has it")
    return torch.load(path, map_location="cpu", weights_only=True)


def load_network(name: str, directory=None) -> tuple[torch.nn.Module, dict]:
    """A network asset (GAN generator, evaluator), in eval mode."""
    raw = load_raw(name, directory)
    net = build(raw["kind"], **raw["config"]["net"])
    net.load_state_dict(raw["state_dict"])
    return net.eval(), raw["config"]


def load_feature_bank(directory=None) -> dict:
    """Evaluator features of the 10,000 test images: {'features': (N, D), 'labels': (N,)}."""
    raw = load_raw("feature-bank", directory)
    return raw["state_dict"]
