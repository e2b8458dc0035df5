"""Progress reporting: rich progress bars on a terminal, plain one-line status messages otherwise (CI logs,
several worker processes). Bars opened while another is active share its display (study bar + trial bar)."""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager

_ACTIVE = {"progress": None}


def _fmt(fields: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


class _PlainProgress:
    def __init__(self, total: int, description: str, every_s: float = 15.0):
        self.total, self.description, self.every_s = total, description, every_s
        self.done, self.start, self.last = 0, time.time(), 0.0

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        self.done = completed if completed is not None else self.done + advance
        now = time.time()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            print(f"[{self.description}] {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%) "
                  f"{now - self.start:.0f}s {_fmt(fields)}", flush=True)


class _RichProgress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        if completed is not None:
            self.progress.update(self.task, completed=completed, info=_fmt(fields))
        else:
            self.progress.update(self.task, advance=advance, info=_fmt(fields))


def use_rich() -> bool:
    return sys.stderr.isatty() and not os.environ.get("HARNESS_PLAIN_PROGRESS")


@contextmanager
def progress_bar(total: int, description: str, start: int = 0):
    """``with progress_bar(n, 'teacher edm') as bar: bar.update(advance=1, loss=0.1)``."""
    if not use_rich():
        bar = _PlainProgress(total, description)
        bar.done = start
        yield bar
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if _ACTIVE["progress"] is not None:  # nested: add a task to the live display, remove it when done
        progress = _ACTIVE["progress"]
        task = progress.add_task(description, total=total, completed=start, info="")
        try:
            yield _RichProgress(progress, task)
        finally:
            progress.remove_task(task)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False) as progress:
        _ACTIVE["progress"] = progress
        try:
            task = progress.add_task(description, total=total, completed=start, info="")
            yield _RichProgress(progress, task)
        finally:
            _ACTIVE["progress"] = None
