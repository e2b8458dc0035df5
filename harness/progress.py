"""Progress reporting: a rich progress bar on a terminal, plain one-line status messages otherwise."""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager


class _PlainProgress:
    def __init__(self, total: int, description: str, every_s: float = 15.0):
        self.total, self.description, self.every_s = total, description, every_s
        self.done, self.start, self.last = 0, time.time(), 0.0

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        self.done = completed if completed is not None else self.done + advance
        now = time.time()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
            print(f"[{self.description}] {self.done}/{self.total} ({100 * self.done / max(self.total, 1):.0f}%) "
                  f"{now - self.start:.0f}s {info}", flush=True)


class _RichProgress:
    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def update(self, completed: int | None = None, advance: int = 0, **fields) -> None:
        info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())
        if completed is not None:
            self.progress.update(self.task, completed=completed, info=info)
        else:
            self.progress.update(self.task, advance=advance, info=info)


@contextmanager
def progress_bar(total: int, description: str, start: int = 0):
    """``with progress_bar(n, 'teacher edm') as bar: bar.update(advance=1, loss=0.1)``."""
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      transient=False) as progress:
            task = progress.add_task(description, total=total, completed=start, info="")
            yield _RichProgress(progress, task)
    else:
        bar = _PlainProgress(total, description)
        bar.done = start
        yield bar
