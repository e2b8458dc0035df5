"""The run directory: every file a DI run writes, by name, and how to read and append to each.

Every other module asks this one for a run directory's paths instead of spelling file names itself.

    config.json      the frozen DIConfig
    rounds.csv       one row per round: whatever scalars the two steps and the loop return (the header is the first
                     row's keys; a later key extends it, nothing is dropped); rows after the last checkpoint are
                     dropped on resume so nothing is duplicated
    evals.csv        every ``eval.every`` rounds (and rounds 0 and last): curve metrics of the evaluated generator
    grids/           sample grids at each evaluation (round_NNNNNN.png); strip.png: all of them side by side
    log.txt          readable log
    checkpoint.pt    G, EMA of G, aux, both optimisers, RNG, round
    summary.json     status, reason, wall time, the start and final evaluations, the run's own verdict, manifest
    class_hist.json  start and final class histograms recomputed later (harness.class_balance)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

CONFIG = "config.json"
ROUNDS = "rounds.csv"
EVALS = "evals.csv"
GRIDS = "grids"
STRIP = "strip.png"
LOG = "log.txt"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
CLASS_HIST = "class_hist.json"
FINISHED = ("completed", "diverged")  # statuses of a run that ended: training it again repeats it


class RunDir:
    """Paths of one run directory (``RunDir(path).rounds`` is its rounds.csv)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    rounds = property(lambda self: self.path / ROUNDS)
    evals = property(lambda self: self.path / EVALS)
    grids = property(lambda self: self.path / GRIDS)
    strip = property(lambda self: self.path / STRIP)
    log = property(lambda self: self.path / LOG)
    checkpoint = property(lambda self: self.path / CHECKPOINT)
    summary = property(lambda self: self.path / SUMMARY)
    class_hist = property(lambda self: self.path / CLASS_HIST)

    def grid(self, round_idx: int) -> Path:
        return self.grids / f"round_{round_idx:06d}.png"

    def grid_files(self) -> list[Path]:
        """The sample grids in round order."""
        return sorted(self.grids.glob("round_*.png"))

    def read_summary(self) -> dict | None:
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None

    def finished_summary(self) -> dict | None:
        """The summary of a run that ended (completed, or diverged), else None."""
        summary = self.read_summary()
        return summary if summary is not None and summary.get("status") in FINISHED else None

    def rounds_done(self) -> int:
        if not self.rounds.is_file():
            return 0
        with self.rounds.open() as f:
            return max(0, sum(1 for _ in f) - 1)


# ----------------------------------------------------------------------------------------------
# Append-only CSV logs


def append_row(path: Path, row: dict) -> None:
    """Append ``row``; the header is written once, from the first row's keys. A key the header lacks extends it
    (the file is rewritten with the longer header, earlier rows blank there): no statistic is ever dropped."""
    path = Path(path)
    if not path.is_file():
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        return
    with path.open(newline="") as f:
        header = next(csv.reader(f), None) or []
    new = [k for k in row if k not in header]
    if new:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        header = header + new
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows)
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fieldnames=header).writerow(row)


def truncate_rows(path: Path, last_round: int) -> None:
    """Drop rows written after the checkpoint we resume from (they will be recomputed)."""
    path = Path(path)
    if not path.is_file():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], [r for r in rows[1:] if r and int(r[0]) <= last_round]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header] + body)
