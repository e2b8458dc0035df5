"""Tables and plots of a study, regenerated from its Optuna storage (plus the run directories it names).

Writes into DIR/NAME (DIR/NAME-smoke for the smoke budget):
    table.csv, table.md   one row per variant (mean and 95% interval over seeds, every metric in every feature
                          space) beside the baseline rows and the starting generator; paired changes and verdicts
                          vs the starting generator and (grid studies) vs the reference variant
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

from harness.reporting.comparison import INTERVALS_NOTE, TOY_METRICS, TOY_NOTE, RunRecord, image_keys, is_toy, n_note, start_row, to_markdown, variant_rows
from harness.common.manifest import git_commit, make_manifest, write_json
from harness.common.run_dir import EVALS, ROUNDS, RunDir
from harness.evaluation.scoring import Evaluation, is_metric_key
from harness.study.spec import objective_name, variant_label



def trials_frame(study) -> pd.DataFrame:
    """One row per trial: state, variant, seed, params, status and reason, run directory, final and start value
    of every metric (flat keys), the run's own verdict."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state in (TrialState.WAITING, TrialState.RUNNING):
            continue
        row = {"number": t.number, "state": t.state.name, "variant": t.user_attrs.get("variant"),
               "seed": t.params.get("seed", t.user_attrs.get("seed")), "value": t.value, **{k: v for k, v in t.params.items() if k != "seed"}}
        for k in ("status", "reason", "run_dir", "wall_s", "rounds_done", "score_gap", "verdict"):
            row[k] = t.user_attrs.get(k)
        for k, v in t.user_attrs.items():
            if isinstance(v, (int, float)) and (is_metric_key(k.removeprefix("start_")) or k.removeprefix("start_") in TOY_METRICS):
                row[k] = v
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_run_dir(run_dir, out: Path):
    """A trial's run directory; for a study computed elsewhere (another machine, another --results-dir) and moved
    here, the directory of the same name under this study's runs/."""
    if not run_dir or (isinstance(run_dir, float) and math.isnan(run_dir)):
        return run_dir
    if Path(run_dir).is_dir():
        return run_dir
    moved = out / "runs" / Path(run_dir).name
    return str(moved) if moved.is_dir() else run_dir


def run_records(study) -> list[RunRecord]:
    from optuna.trial import TrialState

    records = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("surplus") or t.state in (TrialState.WAITING, TrialState.RUNNING) or not t.user_attrs.get("variant"):
            continue
        ev = t.user_attrs.get("evaluation") or {}
        status = "completed" if t.state == TrialState.COMPLETE else t.user_attrs.get("status") or t.state.name.lower()
        if t.state == TrialState.PRUNED and status == "completed":
            status = "pruned"
        records.append(RunRecord(variant=t.user_attrs["variant"], seed=int(t.params.get("seed", t.user_attrs.get("seed", 0))),
                                 status=status, start=Evaluation.from_dict(ev.get("start")),
                                 final=Evaluation.from_dict(ev.get("final")), wall_s=t.user_attrs.get("wall_s"),
                                 run_dir=t.user_attrs.get("run_dir")))
    return records


def reference_variant(spec) -> str | None:
    """Grid studies: the variant every other is compared with, paired by seed (each axis at its first value,
    by convention the reference loop's setting or seed 000's as reported)."""
    if spec.sampler != "grid":
        return None
    return variant_label({a.name: next(iter(a.values)) for a in spec.axes})


def baseline_rows(results_dir: Path, names: tuple[str, ...], keys: list[str]) -> list[dict]:
    """Measured rows of the testbed's baseline table (python -m harness.baselines), as they were computed."""
    path = Path(results_dir) / "baselines" / "table.csv"
    if not names:
        return []
    if not path.is_file():
        return [{"variant": "(baselines missing: run python -m harness.baselines)", "kind": "baseline", "source": "-"}]
    table = pd.read_csv(path)
    table = table[(table.source == "measured") & table.model.isin(names)]
    rows = []
    for _, r in table.iterrows():
        row = {"variant": f"baseline: {r.model}", "kind": "baseline", "n": int(r.n_samples), "n_seeds": 1,
               "source": "harness.baselines (one evaluation)"}
        for k in keys:
            for suffix in ("", "_lo", "_hi"):
                row[k + suffix] = r.get(k + suffix)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Plots


def plot_curves(study, path: Path, title: str) -> None:
    from harness.reporting.plots import metric_curves

    frames = []
    for t in study.get_trials(deepcopy=False):
        evals = t.user_attrs.get("evals")
        if evals and t.user_attrs.get("variant") is not None:
            df = pd.DataFrame(evals)
            df["variant"] = t.user_attrs["variant"]
            frames.append(df)
    if frames:
        metric_curves(pd.concat(frames), path, title)


def plot_diagnostics(trials: pd.DataFrame, path: Path, title: str) -> None:
    from harness.reporting.plots import diagnostics

    rounds, evals = [], []
    for _, t in trials.iterrows():
        for name, frames in ((ROUNDS, rounds), (EVALS, evals)):
            f = Path(str(t.run_dir)) / name
            if t.run_dir and f.is_file():
                df = pd.read_csv(f)
                df["variant"], df["seed"] = t.variant, t.seed
                frames.append(df)
    if rounds:
        diagnostics(pd.concat(rounds), path, title, pd.concat(evals) if evals else None)


def plot_samples(trials: pd.DataFrame, path: Path, title: str, spec=None, results_dir: Path | None = None) -> None:
    """Before/after grids from the same latents, one row per variant (its lowest seed), with the teacher's, the
    strong GAN's and real samples from the baseline table beside them."""
    from harness.reporting.plots import before_after

    rows = []
    for variant, group in trials.groupby("variant", sort=False):
        for _, t in group.sort_values("seed").iterrows():
            grids = RunDir(str(t.run_dir)).grid_files() if t.run_dir else []
            if len(grids) >= 2:
                rows.append((f"{variant} (seed {t.seed:g})", grids[0], grids[-1]))
                break
    references = []
    if spec is not None and results_dir is not None:
        from harness.method.presets import preset as make_preset

        teacher = make_preset(spec.preset).teacher
        samples = Path(results_dir) / "baselines" / "samples"
        references = [(f"{name} (baseline samples)", samples / f"{name}.png")
                      for name in (f"teacher-{teacher}", "gan-strong", "real-test") if (samples / f"{name}.png").is_file()]
    before_after(rows, references, path, title)


def importance(study, out: Path, objective: str = "the objective") -> None:
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
    from harness.reporting.plots import importance_bars

    importance_bars(df, out / "importance.png", f"fANOVA importance for {objective} ({len(complete)} completed trials)")


# ----------------------------------------------------------------------------------------------


def write_study_report(spec, budget: str, url: str, out: Path, command: str, wall_s: float, results_dir: Path,
                       report_only: bool = False, trials_finished: int = 0, write: bool = True,
                       wide: bool = False) -> pd.DataFrame:
    """Tables, plots and manifest of a study from its storage. ``report_only``: this call ran no trial (a
    ``--report`` redraw, or a re-run that found every trial finished), so the manifest keeps the history of the
    calls that did: ``study_runs``, one entry per call that finished ``trials_finished`` >= 1 trials.
    ``write=False``: print the table, write nothing (a re-run that changed nothing leaves the files as they are).
    The printed table is the compact one (100 columns) unless ``wide``."""
    import optuna

    t0 = time.time()
    try:
        study = optuna.load_study(study_name=spec.name, storage=url)
    except KeyError:
        raise SystemExit(f"error: no study {spec.name!r} in {url}; run `python -m harness.study {spec.name}` first") from None
    label = f"{spec.name} [{budget.upper()} budget{' - plumbing check only, not a result' if budget == 'smoke' else ''}]"
    trials = trials_frame(study)
    if "run_dir" in trials:
        trials["run_dir"] = trials.run_dir.map(lambda d: resolve_run_dir(d, out))
    records = run_records(study)
    reference = reference_variant(spec)
    toy = is_toy(records)
    keys = [k for k in TOY_METRICS if any(e is not None and k in e.values for r in records for e in (r.start, r.final))] \
        if toy else image_keys(records)
    rows = ([] if toy else baseline_rows(results_dir, spec.baselines, keys)) + start_row(records, keys) \
        + variant_rows(records, keys, reference)
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=["variant", "kind", "n", "n_seeds", "evidence", "verdict"])
    table.insert(0, "budget", budget)
    if not write:
        print_table(table, label, out, wide)
        return table
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    trials.to_csv(out / "trials.csv", index=False)
    from harness.method.presets import preset as make_preset

    b = {**{k: getattr(make_preset(spec.preset), k) for k in ("rounds", "batch_size")}, **spec.budgets[budget]}

    header = (f"# {label}\n\n{spec.description}\n\nPreset `{spec.preset}`; axes: {', '.join(a.name for a in spec.axes)}; "
              f"{b['rounds']} rounds at batch {b['batch_size']}. Start and final evaluations of the EMA generator: "
              f"{n_note(table, toy)}{'' if toy else ', in every feature space'}. Study objective: {objective_name(spec, budget)}. "
              f"Variant rows: mean over completed seeds; the start row: one evaluation per seed. "
              + (f"Verdict vs reference: each variant against `{reference}`, paired per seed (same evaluation latents). "
                 if reference else "") + (TOY_NOTE if toy else INTERVALS_NOTE) + "\n\n")
    (out / "table.md").write_text(header + to_markdown(table, keys, reference))
    plot_curves(study, out / "curves.png", label)
    if not trials.empty:
        plot_diagnostics(trials, out / "diagnostics.png", label)
        plot_samples(trials, out / "samples.png", label, spec, results_dir)
    if spec.sampler == "tpe":
        importance(study, out, objective_name(spec, budget))
    previous = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    runs = study_runs(previous)
    if not report_only:
        runs.append({"command": command, "git_commit": git_commit(), "wall_s": round(wall_s, 1),
                     "trials_finished": trials_finished, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    manifest = make_manifest(command=command, config={"study": spec.name, "budget": budget, "storage": url,
                                                      "preset": spec.preset, "axes": [a.name for a in spec.axes],
                                                      "sampler": spec.sampler, "pruner": spec.pruner,
                                                      "budget_settings": spec.budgets[budget]},
                             seed=None, wall_s=sum(r.get("wall_s") or 0.0 for r in runs),
                             report_wall_s=round(time.time() - t0, 2), n_trials=len(trials),
                             study_runs=runs, trial_git_commits=_trial_commits(trials))
    write_json(out / "manifest.json", manifest)
    print_table(table, label, out, wide)
    return table


def study_runs(manifest: dict) -> list[dict]:
    """The calls that ran trials, from a study manifest (older manifests kept one ``study_run``, which is the last
    call that ran workers: trusted only when it records a wall time)."""
    if "study_runs" in manifest:
        return list(manifest["study_runs"])
    old = manifest.get("study_run") or {}
    return [old] if old.get("command") else []


def _trial_commits(trials: pd.DataFrame) -> list[str]:
    """The git commits the trials' runs recorded (from each run directory's summary.json)."""
    commits = set()
    for run_dir in trials.get("run_dir", pd.Series(dtype=object)).dropna():
        summary = RunDir(run_dir).summary
        if summary.is_file():
            commits.add(json.loads(summary.read_text()).get("manifest", {}).get("git_commit", "unknown"))
    return sorted(commits)


def print_table(table: pd.DataFrame, title: str, out: Path, wide: bool = False) -> None:
    """The table in the terminal: compact (100 columns) with the paths of the full tables, or the wide one."""
    from harness.reporting.terminal_table import compact_table, wide_table

    if wide:
        wide_table(table, title)
    else:
        print(compact_table(table, title, [str(out / "table.md"), str(out / "table.csv")]))
