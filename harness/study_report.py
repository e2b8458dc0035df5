"""Tables and plots of a study, regenerated from its Optuna storage (plus the run directories it names).

Writes into DIR/NAME (DIR/NAME-smoke for the smoke budget):
    table.csv, table.md   one row per variant (mean ± std over seeds) beside the baseline rows and the
                          generator's starting point; verdict vs the starting generator
    trials.csv            one row per trial (state, metrics, reason, run directory)
    curves.png            KID and precision/recall of the EMA generator against rounds, one line per variant
    diagnostics.png       aux loss, score gap by noise level, generator grad norm
    samples.png           final sample grid of each variant (seed 0)
    importance.csv/png    TPE studies: Optuna parameter importances
    manifest.json         command, git commit, budget, device, wall time
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd

from .manifest import git_commit, make_manifest, write_json
from .report import format_cell, markdown_table, verdict

IMAGE_METRICS = ("kid", "precision", "recall", "coverage", "fid")
TOY_METRICS = ("mmd2", "in_mode_fraction", "modes_covered")
METRICS = IMAGE_METRICS + TOY_METRICS
TABLE_COLUMNS = ["variant", "kid", "kid_std", "precision", "precision_std", "recall", "recall_std", "coverage",
                 "coverage_std", "fid", "fid_std", "mmd2", "mmd2_std", "in_mode_fraction", "in_mode_fraction_std",
                 "n_seeds", "n_pruned", "n_failed", "rounds", "wall_s", "verdict", "kid_vs_ref", "kid_vs_ref_std",
                 "mmd2_vs_ref", "mmd2_vs_ref_std", "verdict_vs_ref", "source"]


def trials_frame(study) -> pd.DataFrame:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state in (TrialState.WAITING, TrialState.RUNNING):
            continue
        row = {"number": t.number, "state": t.state.name, "variant": t.user_attrs.get("variant"),
               "seed": t.params.get("seed", t.user_attrs.get("seed")), "value": t.value, **{k: v for k, v in t.params.items() if k != "seed"}}
        for k in ("status", "reason", "run_dir", "wall_s", "rounds_done", "score_gap", "kid_std"):
            row[k] = t.user_attrs.get(k)
        for m in METRICS:
            row[m] = t.user_attrs.get(m)
            row[f"start_{m}"] = t.user_attrs.get(f"start_{m}")
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values) -> tuple[float, float]:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan")
    s = pd.Series(vals)
    return float(s.mean()), float(s.std(ddof=1)) if len(vals) > 1 else float("nan")


def reference_variant(spec) -> str | None:
    """Grid studies: the variant every other is compared with, paired by seed (each axis at its first value,
    by convention the reference loop's setting or seed 000's as reported)."""
    if spec.sampler != "grid":
        return None
    from .study import variant_label

    return variant_label({a.name: next(iter(a.values)) for a in spec.axes})


def paired_vs_reference(trials: pd.DataFrame, variant: str, reference: str, primary: str) -> dict:
    """Per-seed difference variant - reference of the primary metric, over seeds where both completed."""
    done = trials[trials.state == "COMPLETE"]
    ref = done[done.variant == reference].set_index("seed")[primary]
    var = done[done.variant == variant].set_index("seed")[primary]
    deltas = [float(var[s] - ref[s]) for s in var.index.intersection(ref.index)
              if pd.notna(var[s]) and pd.notna(ref[s])]
    mean, std = _mean_std(deltas)
    return {f"{primary}_vs_ref": mean, f"{primary}_vs_ref_std": std, "verdict_vs_ref": verdict(deltas) if deltas else ""}


def variant_rows(trials: pd.DataFrame, rounds: int, reference: str | None = None) -> list[dict]:
    rows = []
    if trials.empty:
        return rows
    for variant, group in trials.groupby("variant", sort=False):
        done = group[group.state == "COMPLETE"]
        row = {"variant": variant, "n_seeds": len(done), "n_pruned": int((group.state == "PRUNED").sum()),
               "n_failed": int((group.state == "FAIL").sum()), "rounds": rounds, "source": "measured (this study)"}
        for m in METRICS:
            row[m], row[f"{m}_std"] = _mean_std(done[m]) if len(done) else (float("nan"), float("nan"))
        row["wall_s"] = _mean_std(group.wall_s)[0]
        primary = "kid" if "kid" in done and done["kid"].notna().any() else "mmd2"
        deltas = [(f - s) for f, s in zip(done[primary], done[f"start_{primary}"]) if f is not None and s is not None
                  and not (isinstance(f, float) and math.isnan(f))]
        row["verdict"] = verdict(deltas) if len(done) else "no completed seed"
        if reference is not None:
            row.update(paired_vs_reference(trials, variant, reference, primary) if variant != reference
                       else {"verdict_vs_ref": "(reference variant)"})
        rows.append(row)
    return rows


def baseline_rows(results_dir: Path, names: tuple[str, ...]) -> list[dict]:
    """Measured rows of the testbed's baseline table (python -m harness.baselines), as they were computed."""
    path = Path(results_dir) / "baselines" / "table.csv"
    if not names:
        return []
    if not path.is_file():
        return [{"variant": "(baselines missing: run python -m harness.baselines)", "source": "-"}]
    table = pd.read_csv(path)
    table = table[(table.source == "measured") & table.model.isin(names)]
    rows = []
    for _, r in table.iterrows():
        row = {"variant": f"baseline: {r.model}", "source": f"harness.baselines (n={int(r.n_samples)})"}
        for m in METRICS:
            row[m] = r.get(m)
            row[f"{m}_std"] = r.get(f"{m}_std")
        rows.append(row)
    return rows


def start_row(trials: pd.DataFrame) -> list[dict]:
    if trials.empty or all(c not in trials or trials[c].isna().all() for c in ("start_kid", "start_mmd2")):
        return []
    primary = "start_kid" if "start_kid" in trials and trials.start_kid.notna().any() else "start_mmd2"
    row = {"variant": "starting generator (before DI)", "source": "measured (round 0 of each trial)",
           "n_seeds": int(trials[primary].notna().sum())}
    for m in METRICS:
        row[m], row[f"{m}_std"] = _mean_std(trials[f"start_{m}"])
    return [row]


def to_markdown(table: pd.DataFrame) -> str:
    metric_cols, vs_ref = ["kid", "precision", "recall", "coverage", "fid"], ["kid_vs_ref", "verdict_vs_ref"]
    if table["kid"].isna().all() and "mmd2" in table and table["mmd2"].notna().any():
        metric_cols, vs_ref = ["mmd2", "in_mode_fraction"], ["mmd2_vs_ref", "verdict_vs_ref"]
    if table["verdict_vs_ref"].isna().all():
        vs_ref = []
    return markdown_table(table, ["variant", *metric_cols, "n_seeds", "n_pruned", "rounds", "wall_s", "verdict", *vs_ref])


# ----------------------------------------------------------------------------------------------
# Plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(study, path: Path, title: str) -> None:
    import seaborn as sns

    frames = []
    for t in study.get_trials(deepcopy=False):
        evals = t.user_attrs.get("evals")
        if evals and t.user_attrs.get("variant") is not None:
            df = pd.DataFrame(evals)
            df["variant"] = t.user_attrs["variant"]
            frames.append(df)
    if not frames:
        return
    data = pd.concat(frames)
    metrics = [m for m in ("kid", "precision", "recall", "mmd2", "in_mode_fraction") if m in data.columns]
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.6))
    for ax, m in zip(axes, metrics):
        sns.lineplot(data=data, x="round", y=m, hue="variant", errorbar="sd", marker="o", ax=ax, legend=m == metrics[-1])
        ax.set_title(f"{m} of the EMA generator (mean ± sd over seeds)", fontsize=9)
    if axes[-1].get_legend() is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_diagnostics(trials: pd.DataFrame, path: Path, title: str) -> None:
    import seaborn as sns

    from .di import SIGMA_BIN_NAMES

    frames = []
    for _, t in trials.iterrows():
        rounds = Path(str(t.run_dir)) / "rounds.csv"
        if t.run_dir and rounds.is_file():
            df = pd.read_csv(rounds)
            df["variant"] = t.variant
            frames.append(df)
    if not frames:
        return
    data = pd.concat(frames)
    gap = data.groupby("variant")[list(SIGMA_BIN_NAMES)].mean().reset_index().melt(id_vars="variant", var_name="sigma bin",
                                                                                    value_name="score gap")
    gap["sigma bin"] = gap["sigma bin"].str.replace("gap_s", "", regex=False)
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    sns.lineplot(data=data, x="round", y="aux_loss", hue="variant", errorbar="sd", ax=axes[0], legend=False)
    axes[0].set_title("aux (fake-score) loss", fontsize=9)
    sns.pointplot(data=gap, x="sigma bin", y="score gap", hue="variant", ax=axes[1], legend=False)
    axes[1].set_yscale("log")
    axes[1].set_title("score gap E||s_q - s_p||^2 by sigma (mean over rounds)", fontsize=9)
    axes[1].tick_params(axis="x", labelrotation=30)
    sns.lineplot(data=data, x="round", y="gen_grad_norm", hue="variant", errorbar="sd", ax=axes[2])
    axes[2].set_yscale("log")
    axes[2].set_title("generator grad norm", fontsize=9)
    sns.move_legend(axes[2], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_samples(trials: pd.DataFrame, path: Path, title: str) -> None:
    picks = []
    for variant, group in trials.groupby("variant", sort=False):
        for _, t in group.sort_values("seed").iterrows():
            grids = sorted((Path(str(t.run_dir)) / "grids").glob("round_*.png")) if t.run_dir else []
            if grids:
                picks.append((variant, grids[-1]))
                break
    if not picks:
        return
    plt = _plt()
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.6))
    for ax, (variant, png) in zip(axes if len(picks) > 1 else [axes], picks):
        ax.imshow(plt.imread(png))
        ax.set_title(f"{variant}\n{png.stem}", fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def importance(study, out: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return
    try:
        imp = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:  # e.g. all trials share one value
        (out / "importance.csv").write_text(f"# importance not computable: {err}\n")
        return
    # fANOVA over the completed trials only: with few of them (pruning stops most) it is a rough ranking
    df = pd.DataFrame({"param": list(imp), "importance": list(imp.values()), "n_complete_trials": len(complete)})
    df.to_csv(out / "importance.csv", index=False)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(df) + 1))
    ax.barh(df.param[::-1], df.importance[::-1])
    ax.set_xlabel(f"fANOVA importance for final KID ({len(complete)} completed trials)")
    fig.savefig(out / "importance.png", dpi=130, bbox_inches="tight")
    plt.close(fig)


# ----------------------------------------------------------------------------------------------


def write_study_report(spec, budget: str, url: str, out: Path, command: str, wall_s: float, results_dir: Path,
                       report_only: bool = False) -> pd.DataFrame:
    import optuna

    t0 = time.time()
    try:
        study = optuna.load_study(study_name=spec.name, storage=url)
    except KeyError:
        raise SystemExit(f"error: no study {spec.name!r} in {url}; run `python -m harness.study {spec.name}` first") from None
    label = f"{spec.name} [{budget.upper()} budget{' - plumbing check only, not a result' if budget == 'smoke' else ''}]"
    trials = trials_frame(study)
    rounds = int(spec.budgets[budget]["rounds"])
    reference = reference_variant(spec)
    rows = baseline_rows(results_dir, spec.baselines) + start_row(trials) + variant_rows(trials, rounds, reference)
    table = pd.DataFrame(rows).reindex(columns=TABLE_COLUMNS)
    table.insert(0, "budget", budget)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    trials.to_csv(out / "trials.csv", index=False)
    header = (f"# {label}\n\n{spec.description}\n\nPreset `{spec.preset}`; axes: {', '.join(a.name for a in spec.axes)}; "
              f"{spec.budgets[budget]['rounds']} rounds at batch {spec.budgets[budget]['batch_size']}, EMA generator "
              f"evaluated on {spec.budgets[budget]['eval_n']} samples (evaluator feature space). Variant rows: mean ± std "
              f"over completed seeds. Verdict vs the starting generator, paired per seed: a KID change smaller than twice "
              f"its seed spread is not a change. Baseline rows come from `python -m harness.baselines` (their own n)."
              + (f" `kid_vs_ref` / `verdict_vs_ref`: change against `{reference}`, paired per seed, same rule."
                 if reference else "") + "\n\n")
    (out / "table.md").write_text(header + to_markdown(table))
    plot_curves(study, out / "curves.png", label)
    if not trials.empty:
        plot_diagnostics(trials, out / "diagnostics.png", label)
        plot_samples(trials, out / "samples.png", label)
    if spec.sampler == "tpe":
        importance(study, out)
    previous = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    manifest = make_manifest(command=command, config={"study": spec.name, "budget": budget, "storage": url,
                                                      "preset": spec.preset, "axes": [a.name for a in spec.axes],
                                                      "sampler": spec.sampler, "pruner": spec.pruner,
                                                      "budget_settings": spec.budgets[budget]},
                             seed=None, wall_s=(previous.get("wall_s", 0.0) if report_only else wall_s),
                             report_wall_s=round(time.time() - t0, 2), n_trials=len(trials),
                             # the run that produced the trials (a --report run only redraws them)
                             study_run=(previous.get("study_run") or {k: previous.get(k) for k in ("command", "git_commit", "wall_s")})
                             if report_only else {"command": command, "git_commit": git_commit(), "wall_s": wall_s},
                             trial_git_commits=_trial_commits(trials))
    write_json(out / "manifest.json", manifest)
    _print_table(table, label)
    return table


def _trial_commits(trials: pd.DataFrame) -> list[str]:
    """The git commits the trials' runs recorded (from each run directory's summary.json)."""
    commits = set()
    for run_dir in trials.get("run_dir", pd.Series(dtype=object)).dropna():
        summary = Path(run_dir) / "summary.json"
        if summary.is_file():
            commits.add(json.loads(summary.read_text()).get("manifest", {}).get("git_commit", "unknown"))
    return sorted(commits)


def _print_table(table: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    cols = ["variant", "kid", "precision", "recall", "coverage", "n_seeds", "verdict", "verdict_vs_ref"]
    if table["kid"].isna().all():
        cols = ["variant", "mmd2", "in_mode_fraction", "n_seeds", "verdict", "verdict_vs_ref"]
    for c in cols:
        t.add_column(c)
    for _, r in table.iterrows():
        cells = [format_cell(r.get(c)) for c in cols]
        t.add_row(*cells)
    Console(width=160).print(t)
