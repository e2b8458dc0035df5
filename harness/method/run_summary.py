"""A run's summary.json: its status, its start and final evaluations, its own verdict and its manifest."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.method.config import DIConfig
from harness.common.manifest import make_manifest, write_json
from harness.common.run_dir import RunDir
from harness.method.teachers import TEACHERS


def run_verdict(cfg: DIConfig, start: dict | None, final: dict | None) -> dict:
    """The run's own paired change final - start (half-sample intervals) and verdict: one seed, evaluation noise
    only. The toy has no feature spaces or half-samples: its change is reported without an interval."""
    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import Evaluation, is_metric_key
    from harness.evaluation.verdicts import paired_changes, verdict

    a, b = Evaluation.from_dict(final), Evaluation.from_dict(start)
    if a is None or b is None:
        return {}
    if TEACHERS[cfg.teacher].analytic:
        return {"change": {k: [a.values[k] - b.values[k], None, None] for k in a.values if k in b.values}}
    keys = [k for k in a.values if is_metric_key(k)]
    changes = paired_changes([a], [b], keys)
    return {"change": {k: [c.mean, c.lo, c.hi] for k, c in changes.items()},
            "verdict": verdict(changes, list(FEATURE_SPACES)) + " [1 seed: evaluation noise only]"}


def write_summary(out: Path, cfg: DIConfig, status: str, reason: str, evaluations: dict, wall: float, commit: str,
                  command: str | None, device: torch.device) -> dict:
    """summary.json of the run in ``out``, and strip.png: its sample grids side by side (image runs)."""
    run = RunDir(out)
    summary = {"status": status, "reason": reason, "preset": cfg.preset, "seed": cfg.seed, "rounds": cfg.rounds,
               "rounds_done": run.rounds_done(), "start": evaluations.get("start"), "final": evaluations.get("final"),
               "wall_s": round(wall, 2)}
    summary.update(run_verdict(cfg, evaluations.get("start"), evaluations.get("final")))
    summary["manifest"] = make_manifest(command=command or "harness.method.loop.train", config=cfg.to_dict(), seed=cfg.seed,
                                        wall_s=wall, device=device)
    summary["manifest"]["git_commit"] = commit
    write_json(run.summary, summary)
    grids = run.grid_files()
    if len(grids) > 1 and not TEACHERS[cfg.teacher].analytic:  # the samples over training, left to right (same latents)
        from harness.common.figures import grid_strip

        grid_strip(grids, run.strip, f"{cfg.preset} seed {cfg.seed}: EMA generator samples over training ({status})")
    return summary
