"""Regenerate every committed table from its storage and list the tables that changed.

    python -m tests.golden.regenerate_tables [--dry-run]

Runs, for each results folder with a manifest, the command that regenerates it from stored data alone: a study's
``python -m harness.study NAME --budget B [--pruner P] --report`` (its Optuna storage and run directories), the
``python -m harness.report ...`` a run-comparison folder was written by (its run directories), and
``python -m harness.diagnosis`` (results/REPORT.md). Then lists every .md and .csv under results/ whose bytes changed: a
refactor must leave that list empty, but for CSV cells that differ in the last float digits (Optuna's parameter
importances do, even when nothing changed), which are reported as such. (results/baselines/ and results/sample_size/ are drawn from
samples, not from a storage, so they are not regenerated here.)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def regeneration_commands(results: Path) -> list[list[str]]:
    commands = []
    for manifest in sorted(results.glob("*/manifest.json")) + sorted(results.glob("di/*/manifest.json")):
        command = json.loads(manifest.read_text()).get("command") or ""
        # Manifests keep the command as typed, unquoted: a report's --title is the rest of the line.
        head, _, title = command.partition(" --title ")
        words = head.split() + (["--title", title] if title else [])
        if words[:3] == ["python", "-m", "harness.study"]:
            keep, i = words[3:4], 4
            while i < len(words):
                if words[i] in ("--budget", "--pruner"):
                    keep += words[i : i + 2]
                    i += 2
                else:
                    i += 1 + (words[i] in ("--only", "--seeds", "--workers", "--threads"))
            commands.append(["python", "-m", "harness.study", *keep, "--report"])
        elif words[:3] in (["python", "-m", "harness.report"], ["python", "-m", "harness.diagnosis"]):
            commands.append(words)
    # The diagnosis reads the studies' storages: last.
    return sorted(commands, key=lambda words: words[2] == "harness.diagnosis")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.golden.regenerate_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    for words in regeneration_commands(ROOT / "results"):
        print("$", shlex.join(words), flush=True)
        if not args.dry_run:
            done = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                print(done.stdout[-2000:], done.stderr[-2000:])
                raise SystemExit(f"failed: {shlex.join(words)}")
    changed = [line[3:] for line in subprocess.run(
        ["git", "status", "--porcelain", "--", "results/**.md", "results/**.csv", "results/*.md"],
        cwd=ROOT, capture_output=True, text=True).stdout.splitlines()]
    differ = []
    for path in changed:
        close = path.endswith(".csv") and csv_close(path)
        print(f"{path}: {'equal within 1e-9 (last float digits)' if close else 'CHANGED'}")
        differ += [] if close else [path]
    print(f"{len(changed)} of the tables differ from the commit's bytes, {len(differ)} beyond 1e-9"
          if changed else "every table byte-identical")
    raise SystemExit(1 if differ else 0)


def csv_close(path: str, rel: float = 1e-9) -> bool:
    """Whether the regenerated CSV equals the committed one cell by cell, numbers within ``rel``."""
    import csv
    import io
    import math

    old = list(csv.reader(io.StringIO(subprocess.run(["git", "show", f"HEAD:{path}"], cwd=ROOT, capture_output=True,
                                                     text=True).stdout)))
    new = list(csv.reader((ROOT / path).open()))
    if len(old) != len(new):
        return False
    for a_row, b_row in zip(old, new):
        if len(a_row) != len(b_row):
            return False
        for a, b in zip(a_row, b_row):
            if a == b:
                continue
            try:
                x, y = float(a), float(b)
            except ValueError:
                return False
            if not math.isclose(x, y, rel_tol=rel, abs_tol=0.0):
                return False
    return True


if __name__ == "__main__":
    main()
