"""Aggregate DI run directories into a comparison table, curves and a verdict per variant.

    python -m harness.report RUN_DIR [RUN_DIR ...] --out results/NAME [--group-by preset]

Runs are grouped into variants (their preset plus any config field that differs inside the group, seeds
excluded); each variant's row is the mean and 95% interval over seeds of the EMA generator's final metrics in
every feature space, beside the starting generator, with paired changes and the verdict rule of
``harness.evaluation.verdicts`` (see ``harness.reporting.comparison``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from harness.method.config import SPEED_ONLY_FIELDS, DIConfig, flat_dict
from harness.reporting.comparison import INTERVALS_NOTE, TOY_METRICS, TOY_NOTE, RunRecord, image_keys, is_toy, n_note, start_row, to_markdown, variant_rows
from harness.common.manifest import make_manifest, write_json
from harness.common.run_dir import RunDir
from harness.evaluation.scoring import Evaluation
# Fields that do not change what is computed (bookkeeping, speed): never part of a variant's name.
NOT_A_VARIANT = {"seed", "preset", "rounds", *SPEED_ONLY_FIELDS, "eval.every", "eval.n", "eval.final_n", "inference_frozen",
                 "channels_last", "autocast_bf16", "compile", "eval.grad_signal_batches"}


def varying_fields(configs: list[dict]) -> list[str]:
    keys = sorted({k for c in configs for k in c} - NOT_A_VARIANT)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def load_run(run_dir: Path) -> dict | None:
    run_dir = Path(run_dir)
    summary_path = RunDir(run_dir).summary
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    for which in ("start", "final"):
        if summary.get(which) and "values" not in summary[which]:
            raise SystemExit(f"error: {run_dir} was written before start/final evaluations carried values and "
                             f"half-samples (n = final_eval_n, every feature space); re-run it with the same command")
    # through DIConfig: a run written before a field existed gets that field's (reference) default
    config = flat_dict(DIConfig.load(RunDir(run_dir).config))
    return {"dir": str(run_dir), "summary": summary, "config": config}


def variant_name(config: dict, varying: list[str]) -> str:
    parts = [config["preset"]] + [f"{k}={config[k]}" for k in varying if k != "preset"]
    return " ".join(parts)


def run_record(run: dict, varying: list[str]) -> RunRecord:
    summary = run["summary"]
    return RunRecord(variant=variant_name(run["config"], varying), seed=int(run["config"]["seed"]), status=summary["status"],
                     start=Evaluation.from_dict(summary.get("start")), final=Evaluation.from_dict(summary.get("final")),
                     wall_s=summary.get("wall_s"))


def aggregate(runs: list[dict]) -> tuple[pd.DataFrame, list[str]]:
    """One row per variant (mean and 95% interval over seeds of every metric in every space, paired changes vs
    the starting generator, verdict), after the start row; and the metric keys shown."""
    varying = varying_fields([r["config"] for r in runs])
    records = [run_record(r, varying) for r in runs]
    seen: dict[tuple[str, int], str] = {}
    for r, rec in zip(runs, records):  # two runs of one configuration and seed would count as two seeds
        if (rec.variant, rec.seed) in seen:
            raise SystemExit(f"error: {seen[rec.variant, rec.seed]} and {r['dir']} are the same configuration "
                             f"({rec.variant}) and seed ({rec.seed}); give only one of them")
        seen[rec.variant, rec.seed] = r["dir"]
    keys = [k for k in TOY_METRICS if any(e is not None and k in e.values for r in records for e in (r.start, r.final))] \
        if is_toy(records) else image_keys(records)
    table = pd.DataFrame(start_row(records, keys) + variant_rows(records, keys))
    for r in runs:  # rounds per variant, for the reader
        table.loc[table.variant == variant_name(r["config"], varying), "rounds"] = r["config"]["rounds"]
    return table, keys


def curves(runs: list[dict], path: Path, title: str) -> None:
    """Every verdict metric against rounds, one line per variant (mean and 95% band over seeds)."""
    from harness.reporting.plots import metric_curves

    frames = []
    varying = varying_fields([r["config"] for r in runs])
    for r in runs:
        evals = RunDir(r["dir"]).evals
        if evals.is_file():
            df = pd.read_csv(evals)
            df["variant"] = variant_name(r["config"], varying)
            df["seed"] = r["config"]["seed"]
            frames.append(df)
    if frames:
        metric_curves(pd.concat(frames), path, title)


def write_report(run_dirs: list[Path], out: Path, title: str, command: str) -> pd.DataFrame:
    t0 = time.time()
    runs = [r for r in (load_run(d) for d in run_dirs) if r is not None]
    if not runs:
        raise SystemExit("error: none of the given directories holds a finished run (summary.json)")
    table, keys = aggregate(runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    toy = "mmd2" in keys
    header = (f"# {title}\n\nStart and final evaluations of the EMA generator: {n_note(table, toy)}. Paired changes are "
              f"final - start of the same seed on the same latents. {TOY_NOTE if toy else INTERVALS_NOTE}\n\n")
    markdown = header + to_markdown(table, keys)
    (out / "table.md").write_text(markdown)
    table.attrs["markdown"] = markdown  # what table.md holds, for the caller to print without reading it back
    curves(runs, out / "curves.png", title)
    write_json(out / "manifest.json", make_manifest(command=command, config={"runs": [r["dir"] for r in runs]}, seed=None,
                                                    wall_s=time.time() - t0, run_manifests={r["dir"]: r["summary"].get("manifest", {}).get("git_commit") for r in runs}))
    return table


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories written by `python -m harness.run`")
    p.add_argument("--out", required=True, help="output directory (table.csv, table.md, curves.png, manifest.json)")
    p.add_argument("--title", default="Diff-Instruct runs")
    args = p.parse_args(argv)
    command = " ".join(["python -m harness.report"] + (argv if argv is not None else sys.argv[1:]))
    print(write_report([Path(r) for r in args.runs], Path(args.out), args.title, command).attrs["markdown"])


if __name__ == "__main__":
    main()
