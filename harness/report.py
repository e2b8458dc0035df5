"""Aggregate DI run directories into a comparison table, curves and a verdict per variant.

    python -m harness.report RUN_DIR [RUN_DIR ...] --out results/NAME [--group-by preset]

Runs are grouped into variants (by default their preset plus any config field that differs inside the
group, seeds excluded); each variant's row is mean ± std over seeds of the EMA generator's final metrics,
beside its starting point. Verdict against the starting generator, paired per seed:
``improved`` / ``degraded`` when the mean change in KID exceeds twice its seed spread (std over seeds of
final - start), else ``no significant change``; fewer than 2 seeds: ``single seed``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd

from .manifest import make_manifest, write_json

IMAGE_METRICS = ("kid", "precision", "recall", "coverage", "fid")
TOY_METRICS = ("mmd2", "in_mode_fraction", "modes_covered")
# Fields that do not change what is computed (bookkeeping, speed): never part of a variant's name.
NOT_A_VARIANT = {"seed", "preset", "rounds", "threads", "ckpt_every_s", "eval_every", "eval_n", "inference_frozen",
                 "channels_last", "autocast_bf16", "compile"}


def varying_fields(configs: list[dict]) -> list[str]:
    keys = sorted({k for c in configs for k in c} - NOT_A_VARIANT)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def load_run(run_dir: Path) -> dict | None:
    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    config = json.loads((run_dir / "config.json").read_text())
    return {"dir": str(run_dir), "summary": summary, "config": config}


def variant_name(config: dict, varying: list[str]) -> str:
    parts = [config["preset"]] + [f"{k}={config[k]}" for k in varying if k != "preset"]
    return " ".join(parts)


def verdict(deltas: list[float]) -> str:
    """Paired change final - start of the primary metric (KID, or MMD^2 on the toy) over seeds; lower is better."""
    clean = [d for d in deltas if d is not None and math.isfinite(d)]
    if len(clean) < 2:
        return "single seed"
    mean = sum(clean) / len(clean)
    std = pd.Series(clean).std(ddof=1)
    if abs(mean) <= 2 * std:
        return "no significant change"
    return "improved" if mean < 0 else "degraded"


def aggregate(runs: list[dict]) -> pd.DataFrame:
    """One row per variant: mean ± std over seeds of start and final metrics, rounds, wall time, verdict."""
    varying = varying_fields([r["config"] for r in runs])
    toy = all(r["config"].get("teacher") == "toy-gmm" for r in runs)
    metrics, primary = (TOY_METRICS, "mmd2") if toy else (IMAGE_METRICS, "kid")
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(variant_name(r["config"], varying), []).append(r)
    rows = []
    for name, members in groups.items():
        row = {"variant": name, "n_seeds": len(members), "seeds": ",".join(str(m["config"]["seed"]) for m in members),
               "rounds": members[0]["config"]["rounds"], "status": ",".join(sorted({m["summary"]["status"] for m in members}))}
        deltas = []
        for metric in metrics:
            finals = [(m["summary"].get("final") or {}).get(metric) for m in members]
            starts = [(m["summary"].get("start") or {}).get(metric) for m in members]
            finals_ok = [v for v in finals if v is not None]
            starts_ok = [v for v in starts if v is not None]
            row[metric] = sum(finals_ok) / len(finals_ok) if finals_ok else float("nan")
            row[f"{metric}_std"] = pd.Series(finals_ok).std(ddof=1) if len(finals_ok) > 1 else float("nan")
            row[f"start_{metric}"] = sum(starts_ok) / len(starts_ok) if starts_ok else float("nan")
            if metric == primary:
                deltas = [f - s if f is not None and s is not None else None for f, s in zip(finals, starts)]
        clean = [d for d in deltas if d is not None]
        row[f"{primary}_change"] = sum(clean) / len(clean) if clean else float("nan")
        row[f"{primary}_change_std"] = pd.Series(clean).std(ddof=1) if len(clean) > 1 else float("nan")
        row["wall_s"] = sum(m["summary"].get("wall_s", 0.0) for m in members) / len(members)
        row["verdict"] = verdict(deltas) if all(m["summary"]["status"] == "completed" for m in members) else "failed runs"
        rows.append(row)
    return pd.DataFrame(rows)


def curves(runs: list[dict], table: pd.DataFrame, path: Path) -> None:
    """KID and precision/recall of the EMA generator against rounds, one line per variant (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    frames = []
    varying = varying_fields([r["config"] for r in runs])
    for r in runs:
        evals = Path(r["dir"]) / "evals.csv"
        if evals.is_file():
            df = pd.read_csv(evals)
            df["variant"] = variant_name(r["config"], varying)
            df["seed"] = r["config"]["seed"]
            frames.append(df)
    if not frames:
        return
    data = pd.concat(frames)
    metrics = [m for m in ("kid", "precision", "recall", "mmd2", "in_mode_fraction") if m in data.columns]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    axes = axes if len(metrics) > 1 else [axes]
    for ax, m in zip(axes, metrics):
        sns.lineplot(data=data, x="round", y=m, hue="variant", errorbar="sd", marker="o", ax=ax, legend=ax is axes[-1])
        ax.set_title(f"{m} (EMA generator; mean ± sd over seeds)", fontsize=9)
        if m in ("kid", "mmd2"):
            ax.set_yscale("log")
    if len(axes) and axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def format_cell(value, std=None) -> str:
    """A table cell: ``mean ± std`` for floats (std when it is a number), empty for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" + (f" ± {std:.2g}" if isinstance(std, float) and not math.isnan(std) else "")
    return str(value)


def markdown_table(table: pd.DataFrame, cols: list[str]) -> str:
    """Markdown table of ``cols``, each cell with its ``<col>_std`` companion when the frame has one."""
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(format_cell(r.get(c), r.get(f"{c}_std")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    if "kid" in table.columns:
        cols = ["variant", "n_seeds", "rounds", "start_kid", "kid", "kid_change", "precision", "recall", "coverage", "fid", "wall_s", "verdict"]
    else:
        cols = ["variant", "n_seeds", "rounds", "start_mmd2", "mmd2", "mmd2_change", "in_mode_fraction", "modes_covered", "wall_s", "verdict"]
    return markdown_table(table, cols)


def write_report(run_dirs: list[Path], out: Path, title: str, command: str) -> pd.DataFrame:
    t0 = time.time()
    runs = [r for r in (load_run(d) for d in run_dirs) if r is not None]
    if not runs:
        raise SystemExit("error: none of the given directories holds a finished run (summary.json)")
    table = aggregate(runs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    header = (f"# {title}\n\nMetrics of the EMA generator (evaluator feature space, n as in each run's config) after the "
              f"given rounds, mean ± std over seeds; `start_kid` is the generator before DI; `kid_change` = final - start "
              f"(paired per seed). Verdict: a change smaller than twice its seed spread is not a change.\n\n")
    (out / "table.md").write_text(header + to_markdown(table))
    curves(runs, table, out / "curves.png")
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
    table = write_report([Path(r) for r in args.runs], Path(args.out), args.title, command)
    print(to_markdown(table))


if __name__ == "__main__":
    main()
