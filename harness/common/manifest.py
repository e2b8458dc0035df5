"""Provenance for every generated artefact: command, config, seed, git commit, device, wall time."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch


_COMMIT_AT_START: str | None = None


def git_commit() -> str:
    """HEAD of the harness checkout when this process first asked (the code that ran), '+dirty' when
    tracked files outside results/ differed from it then."""
    global _COMMIT_AT_START
    if _COMMIT_AT_START is None:
        _COMMIT_AT_START = _read_git_commit()
    return _COMMIT_AT_START


def _read_git_commit() -> str:
    # A copy of the tree without .git (a lent GPU machine): the launcher states the commit it sent.
    if os.environ.get("HARNESS_GIT_COMMIT"):
        return os.environ["HARNESS_GIT_COMMIT"] + " (stated by the launcher: no .git on the machine that ran)"
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        # generated outputs (results/) do not make the code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_string(device: torch.device | str = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def make_manifest(command: str, config: dict, seed: int | None, wall_s: float, device="cpu", **extra) -> dict:
    return {
        "command": command,
        "config": config,
        "seed": seed,
        "git_commit": git_commit(),
        "device": device_string(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "wall_s": round(wall_s, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host_cpus": os.cpu_count(),
        **extra,
    }


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temp file + rename) so an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    tmp.replace(path)
