"""One trial of a study: its run (``harness.method.loop.train``), what it stores as trial attributes, and the cells
found finished or lost in a storage (recorded, or re-enqueued with the same parameters)."""

from __future__ import annotations

import json
from pathlib import Path

from harness.common.run_dir import RunDir
from harness.study.spec import StudySpec, build_config, cell_key, cell_selected, grid_cells, objective_key, variant_label
from harness.study.storage import metric_label, trial_cell


# ----------------------------------------------------------------------------------------------
# One trial


def run_trial(trial, spec: StudySpec, budget: str, seeds: int, out: Path, threads: int) -> float:
    """Build the trial's config, run it with the shared train() and return the objective's final value."""
    import optuna

    from harness.method.loop import train

    # The study's stored choices, not the spec's values: Optuna refuses a choice list that differs from the stored
    # one, and a study grown by a later call (study_growth) keeps its older values first.
    choices = trial.study.user_attrs.get("choices", {})
    params = {}
    for axis in spec.axes:
        if axis.kind == "categorical":
            params[axis.name] = trial.suggest_categorical(axis.name, choices.get(axis.name, list(axis.values)))
        else:
            params[axis.name] = trial.suggest_float(axis.name, axis.low, axis.high, log=axis.log)
    if spec.sampler == "grid":  # fixed by the enqueued cell
        params["seed"] = trial.suggest_categorical("seed", choices.get("seed", list(range(seeds))))
    else:
        # Not a search dimension: TPE would learn which seed's evaluation draw happens to score the starting
        # generator best (seen in lr_sweep: seeds start 108.5-111.6 KID) and chase that noise. Round-robin instead.
        params["seed"] = trial.number % seeds
        trial.set_user_attr("seed", params["seed"])
    if spec.sampler == "grid" and _cell_taken(trial, params):
        # The queue ran dry between this worker's check and ask(), so Optuna sampled a cell instead of popping
        # one: another trial owns it. Record it as surplus (excluded from every table) and stop.
        trial.set_user_attr("surplus", True)
        raise optuna.TrialPruned("surplus: cell already owned by another trial")
    cfg = build_config(spec, budget, params, params["seed"], threads=threads)
    run_dir = out / "runs" / cell_key(params)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("config_overrides", {k: v for a in spec.axes for k, v in a.overrides(params[a.name]).items()})
    trial.set_user_attr("variant", variant_label(params))
    trial.set_user_attr("budget", budget)

    target = objective_key(spec)

    def on_eval(round_idx: int, metrics: dict) -> None:
        trial.report(metrics[target], round_idx)  # curve evaluation (eval_n samples): the same n at every round
        if round_idx < cfg.rounds and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at round {round_idx}: {target} {metrics[target]:.4g} above the median")

    command = f"python -m harness.study {spec.name} --budget {budget} (trial {trial.number})"
    try:
        summary = train(cfg, run_dir, on_eval=on_eval, command=command, pruned_by=(optuna.TrialPruned,))
    except optuna.TrialPruned as pruned:
        _record(trial, run_dir, status="pruned", reason=str(pruned))
        raise
    except Exception as err:  # recorded on the trial, which Optuna then marks failed
        _record(trial, run_dir, status="failed", reason=f"{type(err).__name__}: {err}")
        raise
    _record(trial, run_dir, status=summary["status"], reason=summary["reason"])
    if summary["status"] != "completed":
        raise optuna.TrialPruned(f"{summary['status']}: {summary['reason']}")
    return float(summary["final"]["values"][target])


def _cell_taken(trial, params: dict) -> bool:
    from optuna.trial import TrialState

    key = cell_key(params)
    for other in trial.study.get_trials(deepcopy=False):
        if other.number == trial.number or other.state == TrialState.FAIL or other.user_attrs.get("surplus"):
            continue
        params_other = trial_cell(other)
        if params_other and cell_key(params_other) == key:
            return True
    return False


def _record(trial, run_dir: Path, status: str, reason: str) -> None:
    """Trial attributes: status, reason, final and start values of every metric (flat, for the dashboard), the
    start/final evaluations with their half-samples (for the tables' paired intervals), the run's change and
    verdict, score gap, wall time, curve history."""
    # Read from the run directory, not from train()'s return value: the pruned and failed paths raise after
    # writing summary.json, a cell trained by --run-cells was trained by another process, and the file's JSON
    # form is exactly what Optuna's user attributes can store.
    trial.set_user_attr("status", status)
    if reason:
        trial.set_user_attr("reason", reason)
    summary_path = RunDir(run_dir).summary
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        for prefix, evaluation in (("", summary.get("final")), ("start_", summary.get("start"))):
            for k, v in ((evaluation or {}).get("values") or {}).items():
                if isinstance(v, (int, float)):
                    trial.set_user_attr(prefix + k, v)
                    label = metric_label(k)
                    if label and not prefix:  # the dashboard's readable copy, with its unit
                        trial.set_user_attr(f"final {label}", v)
        trial.set_user_attr("evaluation", {"start": summary.get("start"), "final": summary.get("final")})
        for k in ("change", "verdict"):
            if summary.get(k) is not None:
                trial.set_user_attr(k, summary[k])
        trial.set_user_attr("wall_s", summary.get("wall_s"))
        trial.set_user_attr("rounds_done", summary.get("rounds_done"))
    rounds = RunDir(run_dir).rounds
    if rounds.is_file():
        import pandas as pd

        df = pd.read_csv(rounds)
        if len(df) and "score_gap" in df:  # the di objective's statistic; others may log none
            tail = df.tail(max(1, len(df) // 10))
            trial.set_user_attr("score_gap", float(tail["score_gap"].mean()))
    evals = RunDir(run_dir).evals
    if evals.is_file():
        import pandas as pd

        trial.set_user_attr("evals", json.loads(pd.read_csv(evals).to_json(orient="records")))
    grids = RunDir(run_dir).grid_files()
    if grids:
        trial.set_user_attr("samples", str(grids[-1]))


def requeue_lost_cells(study, spec: StudySpec, seeds: int, max_failures: int = 3) -> int:
    """Grid studies: enqueue again every cell with no waiting, running or finished trial (its trial failed,
    e.g. interrupted by Ctrl-C), unless it already failed ``max_failures`` times. Returns how many."""
    from optuna.trial import TrialState

    if spec.sampler != "grid":
        return 0
    trials = study.get_trials(deepcopy=False)
    live, failures = set(), {}
    for t in trials:
        params = trial_cell(t)
        if not params or t.user_attrs.get("surplus"):
            continue
        key = cell_key(params)
        if t.state == TrialState.FAIL:
            failures[key] = failures.get(key, 0) + 1
        else:
            live.add(key)
    count = 0
    for cell in grid_cells(spec, seeds):
        key = cell_key(cell)
        if key not in live and failures.get(key, 0) < max_failures and key in failures:
            study.enqueue_trial(cell)
            count += 1
    return count


def record_finished_cells(study, spec: StudySpec, budget: str, seeds: int, out: Path, only: tuple[str, ...] = (),
                          only_seeds: int | None = None) -> int:
    """Record every waiting grid cell whose run directory has already finished (trained by ``--run-cells``, here or
    on another machine), before any worker trains: workers pop waiting trials in order, so a finished cell queued
    behind untrained ones would otherwise wait hours to be recorded. With ``only`` (``only_seeds``), just those
    values' cells (those seeds').
    Returns the number recorded."""
    import optuna
    from optuna.trial import TrialState

    if spec.sampler != "grid":
        return 0
    count = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        cell = trial_cell(frozen)
        if not cell_selected(spec, cell, only, only_seeds) or not run_finished(out / "runs" / cell_key(cell)):
            continue
        if not claim_trial(study, frozen):
            continue
        trial = optuna.Trial(study, frozen._trial_id)
        try:
            value = run_trial(trial, spec, budget, seeds, out, threads=0)  # finished: nothing is trained
        except optuna.TrialPruned:  # a diverged or pruned run, recorded as such
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException:  # not left RUNNING until it goes stale: failed now, re-enqueued by the next call
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, value)
        count += 1
    return count


def claim_trial(study, frozen) -> bool:
    """Move a waiting trial to RUNNING as ask() does: only one process can, and one finished meanwhile is not taken."""
    import optuna
    from optuna.trial import TrialState

    try:
        return study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def run_finished(run_dir: Path) -> bool:
    """A run directory whose summary says it ended (completed or diverged): training it again changes nothing."""

    return RunDir(run_dir).finished_summary() is not None
