"""Study-level performance (not a test): smoke wall times, worker scaling, and what pruning saves.

    python benchmarks/bench_studies.py smoke   [--studies a,b] [--results-dir results]
    python benchmarks/bench_studies.py workers [--study freeze_ablation] [--budget smoke] [--seeds 3] [--repeats 2]
    python benchmarks/bench_studies.py pruning [--study lr_sweep] [--results-dir results]
    python benchmarks/bench_studies.py walltimes [--results-dir results]

* ``smoke`` runs every study at the smoke budget from scratch (its DIR/NAME-smoke is removed first) and times
  the whole command, as a newcomer would run it. Outputs stay in DIR/NAME-smoke.
* ``workers`` runs one study (smoke budget by default) with 1 and then 2 worker processes on this machine, each in a
  fresh scratch directory, ``--repeats`` times each, and reports the median wall time and the speed-up.
* ``pruning`` compares a study run with its spec's pruner (DIR/NAME) against the same study run with
  ``--pruner none`` (DIR/NAME-pruner-none): trial-rounds executed, best objective and the fraction of
  trial-rounds pruning saved. Both runs must exist (``python -m harness.study NAME`` and ``... --pruner none``).
* ``walltimes`` collects the wall time of every study run under DIR from its manifest.

Each writes ``results/benchmarks/study-<what>-cpu.{json,md}`` with a manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from harness.common.manifest import make_manifest, write_json
from harness.reporting.comparison import markdown_table
from harness.study.spec import available_studies

ROOT = Path(__file__).resolve().parent.parent


def run_study(args: list[str], env_extra: dict | None = None) -> tuple[float, int, str]:
    """Run ``python -m harness.study ARGS`` from the checkout; (wall seconds, exit code, last output line)."""
    env = {**os.environ, "HARNESS_PLAIN_PROGRESS": "1", **(env_extra or {})}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness.study", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, check=False)
    wall = time.perf_counter() - t0
    tail = (proc.stdout + proc.stderr).strip().splitlines()
    return wall, proc.returncode, tail[-1] if tail else ""


def table_lines(rows: list[dict], cols: list[str]) -> list[str]:
    """The shared markdown table (``<col>_std`` shown as ± beside ``<col>``) as lines."""
    return markdown_table(pd.DataFrame(rows), cols).splitlines()


def trial_counts(study_dir: Path) -> dict:
    path = study_dir / "trials.csv"
    if not path.is_file():
        return {"complete": 0, "pruned": 0, "failed": 0}
    df = pd.read_csv(path)
    return {k.lower(): int((df.state == k.upper()).sum()) for k in ("complete", "pruned", "fail")}


def bench_smoke(args) -> tuple[list[dict], list[str]]:
    names = args.studies.split(",") if args.studies else available_studies()
    rows = []
    for name in names:
        shutil.rmtree(Path(args.results_dir) / f"{name}-smoke", ignore_errors=True)
        wall, rc, tail = run_study([name, "--budget", "smoke", "--results-dir", args.results_dir])
        counts = trial_counts(Path(args.results_dir) / f"{name}-smoke")
        rows.append({"study": name, "wall_s": round(wall, 1), "exit_code": rc, **counts,
                     "within_3_min": wall <= 180, "last_line": tail[:120]})
        print(f"{name}: {wall:.1f} s, exit {rc}, {counts}", flush=True)
    lines = table_lines(rows, ["study", "wall_s", "exit_code", "complete", "pruned", "fail", "within_3_min"])
    total = sum(r["wall_s"] for r in rows)
    lines += ["", f"All {len(rows)} studies: {total:.0f} s in total; median {statistics.median(r['wall_s'] for r in rows):.1f} s, "
              f"max {max(r['wall_s'] for r in rows):.1f} s (one worker, 2-thread torch, whole command incl. imports)."]
    return rows, lines


def bench_workers(args) -> tuple[list[dict], list[str]]:
    rows = []
    for workers in (1, 2):
        walls = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "baselines").symlink_to((ROOT / args.results_dir / "baselines").resolve())
                wall, rc, tail = run_study([args.study, "--budget", args.budget, "--seeds", str(args.seeds),
                                            "--workers", str(workers), "--results-dir", tmp])
                if rc != 0:
                    raise SystemExit(f"error: {args.study} with {workers} worker(s) exited {rc}: {tail}")
                counts = trial_counts(Path(tmp) / (f"{args.study}-smoke" if args.budget == "smoke" else args.study))
            walls.append(wall)
            print(f"{workers} worker(s): {wall:.1f} s {counts}", flush=True)
        rows.append({"workers": workers, "threads_per_worker": "torch default" if workers == 1 else 1, "wall_s": walls,
                     "median_wall_s": statistics.median(walls), "runs_s": ", ".join(f"{w:.1f}" for w in walls), **counts})
    speedup = rows[0]["median_wall_s"] / rows[1]["median_wall_s"]
    lines = table_lines(rows, ["workers", "threads_per_worker", "complete", "median_wall_s", "runs_s"])
    lines += ["", f"Speed-up of 2 workers over 1: **{speedup:.2f}x** ({args.study}, {args.budget} budget, {args.seeds} seed(s), "
              f"{os.cpu_count()} CPU cores)."]
    return rows + [{"speedup_2_over_1": speedup}], lines


def bench_pruning(args) -> tuple[list[dict], list[str]]:
    dirs = {"pruned": Path(args.results_dir) / args.study, "unpruned": Path(args.results_dir) / f"{args.study}-pruner-none"}
    rows = []
    for label, d in dirs.items():
        if not (d / "trials.csv").is_file():
            hint = "" if label == "pruned" else " --pruner none"
            raise SystemExit(f"error: {d}/trials.csv missing; run python -m harness.study {args.study}{hint} first")
        df = pd.read_csv(d / "trials.csv")
        manifest = json.loads((d / "manifest.json").read_text())
        done = df[df.state == "COMPLETE"]
        best = done.loc[done.value.idxmin()] if len(done) else None
        rows.append({"run": label, "pruner": manifest["config"].get("pruner"), "trials": len(df),
                     "complete": len(done), "pruned": int((df.state == "PRUNED").sum()),
                     "trial_rounds": int(df.rounds_done.fillna(0).sum()),
                     "best_kid": float(best.value) if best is not None else float("nan"),
                     "best_kid_std": float(best.kid_std) if best is not None and "kid_std" in best else float("nan"),
                     "best_variant": best.variant if best is not None else "",
                     "wall_s": manifest.get("wall_s")})
    saved = 1 - rows[0]["trial_rounds"] / rows[1]["trial_rounds"]
    # best_kid is shown with its KID subset std (best_kid_std)
    lines = table_lines(rows, ["run", "pruner", "trials", "complete", "pruned", "trial_rounds", "best_kid", "best_variant",
                               "wall_s"])
    lines += ["", f"Trial-rounds saved by pruning: **{saved:.1%}** ({args.study}); best final KID "
              f"{rows[0]['best_kid']:.4g} with pruning against {rows[1]['best_kid']:.4g} without."]
    return rows + [{"fraction_saved": saved}], lines


def bench_walltimes(args) -> tuple[list[dict], list[str]]:
    rows = []
    for m in sorted(Path(args.results_dir).glob("*/manifest.json")):
        manifest = json.loads(m.read_text())
        cfg = manifest.get("config", {})
        if "study" not in cfg:
            continue
        rows.append({"dir": m.parent.name, "study": cfg["study"], "budget": cfg.get("budget"),
                     "pruner": cfg.get("pruner"), "trials": manifest.get("n_trials"), "wall_s": manifest.get("wall_s"),
                     "command": (manifest.get("study_run") or manifest).get("command"),
                     "git_commit": (manifest.get("study_run") or manifest).get("git_commit")})
    lines = table_lines(rows, ["dir", "study", "budget", "pruner", "trials", "wall_s", "command"])
    return rows, lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("what", choices=("smoke", "workers", "pruning", "walltimes"))
    p.add_argument("--studies", default=None, help="smoke: comma-separated names (default: all)")
    p.add_argument("--study", default=None, help="workers: freeze_ablation; pruning: lr_sweep")
    p.add_argument("--seeds", type=int, default=3, help="workers: seeds per cell")
    p.add_argument("--budget", default="smoke", choices=("smoke", "cpu"), help="workers: the study's budget")
    p.add_argument("--repeats", type=int, default=2, help="workers: runs per worker count")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    args.study = args.study or {"workers": "freeze_ablation", "pruning": "lr_sweep"}.get(args.what)
    t0 = time.time()
    rows, lines = {"smoke": bench_smoke, "workers": bench_workers, "pruning": bench_pruning,
                   "walltimes": bench_walltimes}[args.what](args)
    out = Path(args.out)
    command = " ".join(["python benchmarks/bench_studies.py"] + (argv if argv is not None else sys.argv[1:]))
    stem = f"study-{args.what}" + (f"-{args.budget}" if args.what == "workers" else "") + "-cpu"
    write_json(out / f"{stem}.json", {"rows": rows, "manifest": make_manifest(
        command=command, config=vars(args), seed=None, wall_s=time.time() - t0)})
    (out / f"{stem}.md").write_text(f"<!-- {command} -->\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
