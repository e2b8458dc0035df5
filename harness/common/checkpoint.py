"""Atomic, resumable checkpoints of a dict of stateful objects (networks, optimisers, data streams)."""

from __future__ import annotations

from pathlib import Path

import torch


class Checkpoint:
    """Atomic save/restore of a dict of stateful objects plus step, elapsed time, free-form ``extra`` data
    and the global RNG state (CPU, and CUDA when present), so a resumed run continues the same sequence."""

    def __init__(self, path: Path, objects: dict):
        self.path, self.objects = Path(path), objects
        self.extra: dict = {}

    def save(self, step: int, elapsed: float, extra: dict | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.state_dict() for k, v in self.objects.items()}
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state["_meta"] = {"step": step, "elapsed": elapsed, "rng": rng["cpu"], "rng_cuda": rng.get("cuda"),
                          "extra": extra if extra is not None else self.extra}
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.path)

    def restore(self) -> tuple[int, float]:
        """Load the checkpoint if there is one; returns (step, elapsed seconds), (0, 0.0) when none."""
        if not self.path.is_file():
            return 0, 0.0
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        for k, v in self.objects.items():
            v.load_state_dict(state[k])
        meta = state["_meta"]
        torch.set_rng_state(meta["rng"])
        if meta.get("rng_cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(meta["rng_cuda"])
        self.extra = meta.get("extra") or {}
        return meta["step"], meta["elapsed"]


class Interrupted(BaseException):
    """SIGINT/SIGTERM arrived; the checkpoint was saved and the same command resumes. A BaseException (like
    KeyboardInterrupt) so that handlers for ordinary errors, Optuna's ``catch`` included, let it through."""


def run_resumable(total_steps: int, step_fn, ckpt: Checkpoint, ckpt_every_s: float, description: str,
                  on_start=None, extra_fn=None) -> float:
    """Call ``step_fn(step) -> dict`` from the last checkpoint to ``total_steps``; returns the wall time
    including time spent before an interruption.

    ``on_start(start_step)`` runs after the restore (e.g. to truncate logs written after the checkpoint);
    ``extra_fn()`` returns small state stored in the checkpoint. Checkpoints every ``ckpt_every_s``
    seconds (0: every step), at the end, and on SIGINT/SIGTERM, which then raise ``Interrupted``.
    """
    import signal
    import threading
    import time

    from harness.common.progress import progress_bar

    start_step, elapsed = ckpt.restore()
    if start_step:
        print(f"[{description}] resuming from step {start_step}/{total_steps} ({elapsed:.0f}s already spent)", flush=True)
    if on_start is not None:
        on_start(start_step)
    stop = {"flag": False}

    def _request_stop(signum, _frame):
        stop["flag"] = True

    in_main = threading.current_thread() is threading.main_thread()  # signals only work there
    old = {s: signal.signal(s, _request_stop) for s in (signal.SIGINT, signal.SIGTERM)} if in_main else {}
    t0, last_save = time.time() - elapsed, time.time()
    step = start_step
    extra = extra_fn or (lambda: None)
    try:
        with progress_bar(total_steps, description, start=start_step) as bar:
            while step < total_steps:
                stats = step_fn(step)
                step += 1
                bar.update(completed=step, **(stats or {}))
                if stop["flag"]:
                    ckpt.save(step, time.time() - t0, extra())
                    raise Interrupted(f"[{description}] interrupted at step {step}; checkpoint saved to {ckpt.path}; "
                                      f"rerun the same command to resume")
                if time.time() - last_save >= ckpt_every_s:
                    ckpt.save(step, time.time() - t0, extra())
                    last_save = time.time()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    ckpt.save(step, time.time() - t0, extra())
    return time.time() - t0
