"""Precision benchmark (not a test): DI rounds/s in fp32 and under ``precision=bf16``, side by side on this machine,
for one worker (all threads) and for two workers (two processes, one thread each, running at once), and what one
curve evaluation costs against 50 rounds.

    python benchmarks/bench_precision.py [--settings gan,seed-report,onestep] [--repeats 5] [--batch 128]

The two precisions alternate round by round (fp32, bf16, fp32, ...), so a drift of the machine's speed touches both
alike; each figure is the median over ``--repeats`` rounds after two warm-up rounds. Networks are freshly built
with the shipped architectures (weights do not change speed). Writes results/benchmarks/precision-cpu.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_di import SETTINGS, make, round_fn  # noqa: E402

from harness.common import markdown  # noqa: E402
from harness.common.manifest import make_manifest, write_json  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def alternating_round_times(setting: str, batch: int, repeats: int, threads: int) -> dict[str, float]:
    """Median seconds per round of each precision, the precisions alternating round by round."""
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    runs = {}
    for precision in PRECISIONS:
        cfg, nets = make(setting, batch, device)
        runs[precision] = round_fn(dataclasses.replace(cfg, precision=precision), nets, batch, device)
    for _ in range(2):
        for f in runs.values():
            f()
    times = {p: [] for p in PRECISIONS}
    for _ in range(repeats):
        for p, f in runs.items():
            t0 = time.perf_counter()
            f()
            times[p].append(time.perf_counter() - t0)
    return {p: statistics.median(t) for p, t in times.items()}


def _worker(setting: str, batch: int, repeats: int, queue) -> None:
    queue.put(alternating_round_times(setting, batch, repeats, threads=1))


def two_workers(setting: str, batch: int, repeats: int) -> dict[str, float]:
    """Two processes with one thread each, at once: each one's median seconds per round, averaged."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(setting, batch, repeats, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return {p: statistics.mean(r[p] for r in results) for p in PRECISIONS}


def curve_evaluation_cost(setting: str, batch: int, eval_n: int = 2000) -> dict[str, float]:
    """Seconds of one curve evaluation (eval_n samples scored in every feature space) and of 50 fp32 rounds."""
    from harness.evaluation.run_evaluator import Evaluator
    from harness.method.presets import preset

    _, preset_name = SETTINGS[setting]
    device = torch.device("cpu")
    cfg, nets = make(setting, batch, device)
    cfg = preset(preset_name, batch_size=batch, eval_n=eval_n)
    evaluator = Evaluator(cfg, nets)
    evaluator.curve(nets.generator)  # warm-up (feature banks, classifiers)
    t0 = time.perf_counter()
    evaluator.curve(nets.generator)
    t_eval = time.perf_counter() - t0
    f = round_fn(cfg, nets, batch, device)
    f()
    t0 = time.perf_counter()
    for _ in range(3):
        f()
    return {"curve_evaluation_s": t_eval, "rounds_50_s": 50 * (time.perf_counter() - t0) / 3}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="gan,seed-report,onestep", help=f"comma-separated, of: {', '.join(SETTINGS)}")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="results/benchmarks")
    args = p.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise SystemExit(f"error: unknown setting(s) {', '.join(unknown)}; available: {', '.join(SETTINGS)}")
    t_start, rows, evals = time.time(), [], []
    threads = os.cpu_count() or 1
    for setting in settings:
        one = alternating_round_times(setting, args.batch, args.repeats, threads)
        rows.append({"setting": setting, "layout": f"1 worker x {threads} threads", **one,
                     "ratio": one["fp32"] / one["bf16"], "rounds_per_s": {p: 1 / one[p] for p in PRECISIONS}})
        two = two_workers(setting, args.batch, args.repeats)
        rows.append({"setting": setting, "layout": "2 workers x 1 thread", **two, "ratio": two["fp32"] / two["bf16"],
                     "rounds_per_s": {p: 2 / two[p] for p in PRECISIONS}})
        print(json.dumps(rows[-2:]), flush=True)
    torch.set_num_threads(threads)
    for setting in settings:
        evals.append({"setting": setting, **curve_evaluation_cost(setting, args.batch)})
    cpu = cpu_name()
    out = Path(args.out)
    write_json(out / "precision-cpu.json", {"cpu": cpu, "rows": rows, "curve_evaluation": evals, "manifest": make_manifest(
        command=" ".join(["python benchmarks/bench_precision.py"] + (argv if argv is not None else sys.argv[1:])),
        config=vars(args), seed=None, wall_s=time.time() - t_start, device=torch.device("cpu"))})
    table = markdown.table(
        ["setting", "layout", "fp32 s/round", "bf16 s/round", "bf16 speed-up", "fp32 rounds/s (all workers)",
         "bf16 rounds/s (all workers)"],
        [[r["setting"], r["layout"], f"{r['fp32']:.3f}", f"{r['bf16']:.3f}", f"{r['ratio']:.2f}x",
          f"{r['rounds_per_s']['fp32']:.3f}", f"{r['rounds_per_s']['bf16']:.3f}"] for r in rows])
    cost = markdown.table(
        ["setting", "one curve evaluation (s, n = 2,000, every space)", "50 fp32 rounds (s)", "evaluation / 50 rounds"],
        [[e["setting"], f"{e['curve_evaluation_s']:.1f}", f"{e['rounds_50_s']:.1f}",
          f"{e['curve_evaluation_s'] / e['rounds_50_s']:.2f}"] for e in evals])
    text = (f"CPU: {cpu}, {threads} cores; batch {args.batch}; median of {args.repeats} rounds, fp32 and bf16 "
            f"alternating.\n\n{table}\n\n{cost}")
    (out / "precision-cpu.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
