"""Running a study: its Optuna storage, one trial, and the worker processes that pull trials from the storage.

* Categorical studies (``sampler = "grid"``): every value x every seed is enqueued once as a WAITING trial
  when the study is created; workers pop them atomically from the storage, so several workers (processes
  or machines) never run a cell twice. Continuous studies (``"tpe"``): Optuna's TPE sampler, ``trials`` in all.
* Each trial builds one ``DIConfig`` (``harness.study.spec.build_config``) and calls ``harness.method.loop.train``; it
  reports the objective at every curve evaluation for the pruner and stores its metrics, evaluations, verdict and
  run directory as trial attributes.
* Storage: SQLite at DIR/NAME/study.db by default (any Optuna RDB URL works), with heartbeats: a trial whose
  worker was killed goes stale, is marked failed and re-enqueued with the same parameters, and its rerun
  resumes the run directory's checkpoint.
* Workers are spawned processes (``multiprocessing`` spawn context), so every entry point here is a top-level
  function taking picklable arguments (``WorkerArgs``, ``CellJob``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.common.run_dir import RunDir
from harness.study.growth import grow_study, grown_params, restore_interrupted_growth, stored_choices, widened_choices
from harness.study.spec import SPEC_ROOT_ENV, SpecError, StudySpec, build_config, cell_key, cell_selected, grid_cells, load_study, objective_key, objective_name, select_cells, variant_label


# ----------------------------------------------------------------------------------------------
# Storage and study


def storage_url(results_dir: Path, name: str, budget: str, url: str | None, pruner: str | None = None) -> str:
    return url or f"sqlite:///{study_dir(results_dir, name, budget, pruner) / 'study.db'}"


def study_dir(results_dir: Path, name: str, budget: str, pruner: str | None = None) -> Path:
    """DIR/NAME for the cpu budget; DIR/NAME-gpu and DIR/NAME-smoke for the others. Budgets differ in rounds and
    batch, so their runs never share a directory: a cell's run directory from one would otherwise be refused (or,
    worse, recorded) by the other. ``-pruner-P`` is appended when ``--pruner`` overrides the spec's (another study,
    compared beside it)."""
    suffix = ("" if budget == "cpu" else f"-{budget}") + (f"-pruner-{pruner}" if pruner else "")
    return Path(results_dir) / f"{name}{suffix}"


def make_storage(url: str, heartbeat: int, grace: int):
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from optuna import storages

    retry_cls = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    retry = retry_cls(max_retry=3)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    kwargs = dict(engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat, grace_period=grace)
    # Optuna 4 renamed the stale-trial callback's keyword: read the signature (catching the TypeError of the wrong
    # keyword would also catch any other bad argument).
    new_keyword = "heartbeat_stale_trial_callback" in inspect.signature(storages.RDBStorage).parameters
    kwargs["heartbeat_stale_trial_callback" if new_keyword else "failed_trial_callback"] = retry
    try:
        storage = storages.RDBStorage(url, **kwargs)
    finally:
        # Failed trials are reported in one line by the worker (with their reason attribute), not as tracebacks.
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    if url.startswith("sqlite"):
        sqlite_immediate_transactions(storage.engine)
    return storage


def sqlite_immediate_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins (``BEGIN IMMEDIATE``).

    Under SQLite's default deferred transactions, two workers that each read and then write (Optuna popping a
    waiting trial, a trial's tell racing a heartbeat) can deadlock on the lock upgrade, and SQLite then fails
    one of them at once with "database is locked" instead of waiting out the busy timeout. Taken up front, the
    lock makes them queue (for up to the 60 s busy timeout) instead.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own deferred BEGIN

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are closed; new ones get them


def make_sampler(spec: StudySpec, seed: int = 0):
    import optuna

    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    return optuna.samplers.RandomSampler(seed=seed)  # grid cells are enqueued; never sampled


def make_pruner(spec: StudySpec):
    import optuna

    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    # Prune a trial whose KID at an evaluation is worse than the median of the trials that reached it,
    # once 3 trials have; the starting point (round 0) is never pruned.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


def annotate_existing(spec: StudySpec, budget: str, url: str) -> None:
    """--report: bring a stored study's dashboard annotations up to date (its trials are left as they are)."""
    import optuna

    try:
        annotate_for_dashboard(optuna.load_study(study_name=spec.name, storage=url), spec, budget)
    except KeyError:
        pass  # no such study: write_study_report says so in one line


def count_finished(study) -> int:
    """Trials that ended (completed or pruned); a call that adds none changed nothing."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def create_or_load(spec: StudySpec, budget: str, seeds: int | None, url: str, heartbeat: int, grace: int,
                   trials: int | None, only: tuple[str, ...] = ()):
    """Create the study once, or load it and check it is the same study. Grid studies: enqueue every cell (or, with
    ``only``, the cells of those axis values) that the study does not hold yet, so a later call can add values
    to a study started on a few of them. ``seeds`` per cell: None for the stored number (a new study: the budget's);
    the study's ``seeds`` attribute is the largest asked for so far. A spec axis that gained values, or more seeds
    than the study held, grows the stored study's value space (study_growth); the ``choices`` attribute then holds
    every categorical parameter's choices, which every trial suggests from."""
    import optuna

    storage = make_storage(url, heartbeat, grace)
    if restore_interrupted_growth(storage, spec.name):
        print(f"[study {spec.name}] an interrupted growth of the study's value space was undone (its backup restored)",
              flush=True)
    study = optuna.create_study(study_name=spec.name, storage=storage, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(spec), pruner=make_pruner(spec))
    attrs = study.user_attrs
    if "objective" in attrs and attrs["objective"] != objective_key(spec):
        raise SpecError(f"storage {url} holds a {spec.name} study that minimised {attrs['objective']}, not "
                        f"{objective_key(spec)}; use another --results-dir or --storage")
    if "budget" in attrs and attrs["budget"] != budget:
        raise SpecError(f"storage {url} holds a {attrs['budget']}-budget {spec.name} study; use another --results-dir or --storage")
    if spec.sampler != "grid" and only:
        raise SpecError(f"study {spec.name}: --only selects grid cells, and this study is a {spec.sampler} search")
    existed = "cells" in attrs
    held_seeds = int(attrs.get("seeds", 0))
    if seeds is None:
        seeds = held_seeds if existed else int(spec.budgets[budget].get("seeds", 1))
    study = _grow_value_space(study, spec, max(seeds, held_seeds))
    if spec.sampler == "grid":  # this call's cells: its own seeds, however many earlier calls queued
        held = {cell_key(p) for p in (trial_cell(t) for t in study.get_trials(deepcopy=False)) if p}
        new = [c for c in select_cells(spec, seeds, only) if cell_key(c) not in held]
        for cell in new:
            study.enqueue_trial(cell, skip_if_exists=True)
        study.set_user_attr("cells", len(held) + len(new))
        study.set_user_attr("trials", len(held) + len(new))
    if seeds > held_seeds:
        study.set_user_attr("seeds", seeds)
    if not existed:
        study.set_user_attr("budget", budget)
        if spec.sampler != "grid":
            study.set_user_attr("cells", 0)
            study.set_user_attr("trials", trials)
        study.set_user_attr("axes", [a.name for a in spec.axes])
        study.set_user_attr("pruner", spec.pruner)
        study.set_user_attr("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        study.set_user_attr("objective", objective_key(spec))
        annotate_for_dashboard(study, spec, budget)
    return study


def _grow_value_space(study, spec: StudySpec, seeds: int):
    """Widen the stored categorical choices to the spec's axis values (and, grid studies, ``seeds`` seeds), rebuilding
    the study if a stored choice list must grow; store the choices as the ``choices`` attribute. Returns the study."""
    from optuna.storages import fail_stale_trials

    wanted = {a.name: list(a.values) for a in spec.axes if a.kind == "categorical"}
    if spec.sampler == "grid":
        wanted["seed"] = list(range(seeds))
    stored = stored_choices(study.get_trials(deepcopy=False))
    widened = widened_choices(stored, wanted)
    grown = grown_params(stored, widened)
    if grown:
        fail_stale_trials(study)  # a trial left running by a killed call would block the rebuild
        what = "; ".join(f"{name} gains {', '.join(map(str, values))}" for name, values in grown.items())
        print(f"[study {spec.name}] the study's value space grows ({what}): its trials are rebuilt with the wider "
              f"choices", flush=True)
        try:
            study = grow_study(study, widened, sampler=make_sampler(spec), pruner=make_pruner(spec))
        except RuntimeError as err:
            raise SpecError(str(err)) from None
    choices = {k: list(v) for k, v in widened.items()}  # JSON lists, as the attribute reads back
    if study.user_attrs.get("choices") != choices:
        study.set_user_attr("choices", choices)
    return study


def metric_label(flat: str) -> str | None:
    """Display name with unit of a flat metric key (``fid_vgg`` -> ``FID (raw, vgg features)``), toy keys too."""
    from harness.reporting.comparison import TOY_METRICS
    from harness.evaluation.scoring import METRICS, is_metric_key, split_key

    if is_metric_key(flat):
        m, space = split_key(flat)
        return METRICS[m].header(space)
    return TOY_METRICS.get(flat)


def annotate_for_dashboard(study, spec: StudySpec, budget: str) -> None:
    """What optuna-dashboard shows of the study: the objective's name, the description and the question as
    attributes, and a note (markdown) with both, the axes and the metric names with their units. Written when the
    study is created and on ``--report`` (never by a run that changes nothing)."""
    study.set_metric_names([objective_name(spec, budget)])
    study.set_user_attr("description", spec.description)
    study.set_user_attr("question", spec.question or spec.description)
    try:
        from optuna_dashboard import save_note
    except ImportError:  # the dashboard extra is optional
        return
    from harness.reporting.comparison import TOY_METRICS
    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import METRICS

    legend = [f"- `{k}`: {label}" for k, label in TOY_METRICS.items()] if spec.preset == "toy" else \
        [f"- `{m}_{s}`: {METRICS[m].header(s)}" for s in FEATURE_SPACES for m in METRICS]
    save_note(study, "\n".join([
        f"# {spec.name} [{budget} budget]", "", f"**Question.** {spec.question or spec.description}", "",
        spec.description, "", f"**Objective.** {objective_name(spec, budget)}, minimised.", "",
        "**Axes.** " + "; ".join(f"`{a.name}`: {a.description}" for a in spec.axes), "",
        "Each trial carries its final metrics with their units (`final ...`), its config overrides, its run directory "
        "and the path of its last sample grid. Flat keys (start values prefixed `start_`):", *legend]))


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


def trial_cell(trial) -> dict | None:
    """A trial's grid cell: its enqueued (fixed) params, else its params once every one is suggested; None while
    another worker is still in the middle of suggesting them (its ``params`` then lack the seed)."""
    params = trial.system_attrs.get("fixed_params") or trial.params or {}
    return params if "seed" in params else None


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
        if len(df):
            tail = df.tail(max(1, len(df) // 10))
            trial.set_user_attr("score_gap", float(tail["score_gap"].mean()))
    evals = RunDir(run_dir).evals
    if evals.is_file():
        import pandas as pd

        trial.set_user_attr("evals", json.loads(pd.read_csv(evals).to_json(orient="records")))
    grids = RunDir(run_dir).grid_files()
    if grids:
        trial.set_user_attr("samples", str(grids[-1]))


# ----------------------------------------------------------------------------------------------
# Workers


@dataclass(frozen=True)
class WorkerArgs:
    """Everything a worker needs to find its study again: plain values, so a spawned process can receive them."""

    name: str  # the study's name (its spec is loaded again from spec_root)
    budget: str
    seeds: int
    url: str  # storage URL
    out: str  # the study directory (runs go to OUT/runs/CELL)
    trials: int | None  # TPE studies: trials in all
    heartbeat: int
    grace: int
    threads: int  # torch threads per trial (0: torch's default)
    pruner: str | None  # --pruner, when it overrides the spec's
    spec_root: str | None  # $HARNESS_SPECS of the coordinator, for a worker started without it
    only: tuple[str, ...] = ()  # --only: train just the waiting cells with one of these axis values
    only_seeds: int | None = None  # --seeds K below the study's count: train just the waiting cells of seeds < K


def _pop_selected_waiting_trial(study, spec: StudySpec, only: tuple[str, ...], seeds: int | None) -> int | None:
    """Optuna's own pop (the first waiting trial a process can move to RUNNING), restricted to the call's cells
    (``--only``'s values, ``--seeds``' seeds): a study built value by value holds cells queued by earlier calls,
    other values' or more seeds', and ``--only X --seeds 3`` must not train them."""
    from optuna.trial import TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if cell_selected(spec, trial_cell(frozen), only, seeds) and _claim(study, frozen):
            return frozen._trial_id
    return None


def _claim(study, frozen) -> bool:
    """Move a waiting trial to RUNNING as ask() does: only one process can, and one finished meanwhile is not taken."""
    import optuna
    from optuna.trial import TrialState

    try:
        return study._storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def worker(args: WorkerArgs, worker_id: int) -> None:
    """Pull trials until the study is done. Grid: pop enqueued cells; TPE: until ``trials`` finished."""
    import optuna
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    if args.spec_root:
        os.environ[SPEC_ROOT_ENV] = args.spec_root
    spec = load_study(args.name)
    if args.pruner:
        spec = dataclasses.replace(spec, pruner=args.pruner)
    study = optuna.load_study(study_name=spec.name, storage=make_storage(args.url, args.heartbeat, args.grace),
                              sampler=make_sampler(spec, seed=worker_id), pruner=make_pruner(spec))
    out_path = Path(args.out)
    done_states = (TrialState.COMPLETE, TrialState.PRUNED)
    if args.only or args.only_seeds:
        # Study.ask() pops the first waiting trial of any cell; Optuna has no public hook to choose, so this study
        # object's pop is replaced (checked to exist, so an Optuna that renames it fails loudly, not silently).
        if not callable(getattr(study, "_pop_waiting_trial_id", None)):
            raise SystemExit(f"error: this Optuna ({optuna.__version__}) has no Study._pop_waiting_trial_id; "
                             f"--only cannot restrict which queued cells the workers train")
        study._pop_waiting_trial_id = lambda: _pop_selected_waiting_trial(study, spec, args.only, args.only_seeds)

    failures: dict[int, str] = {}  # trial number -> one-line reason, for the worker's message
    started: list[int] = []  # the number of the trial this worker's current optimize() call started

    def objective(trial):
        started.append(trial.number)
        try:
            return run_trial(trial, spec, args.budget, args.seeds, out_path, args.threads)
        except optuna.TrialPruned:
            raise
        except Exception as err:  # whatever failed, the trial carries a one-line reason (and the log a traceback)
            import traceback

            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            failures[trial.number] = reason
            traceback.print_exc()
            try:
                if "reason" not in trial.user_attrs:
                    trial.set_user_attr("reason", reason)
            except Exception:  # the storage itself may be what failed
                pass
            raise

    from harness.common.checkpoint import Interrupted
    from harness.common.progress import progress_bar

    total = study.user_attrs.get("trials") or 0
    with progress_bar(total, f"study {spec.name} [{args.budget}] worker {worker_id}") as bar:
        storage_errors = 0
        while True:
            try:
                fail_stale_trials(study)
                trials_now = study.get_trials(deepcopy=False)
            except optuna.exceptions.StorageInternalError as err:
                storage_errors = _storage_error(spec.name, err, storage_errors)
                continue
            finished = [t for t in trials_now if t.state in done_states and not t.user_attrs.get("surplus")]
            bar.update(completed=len(finished))
            if args.only or args.only_seeds:  # cells queued by earlier calls are neither trained nor waited for here
                trials_now = [t for t in trials_now if cell_selected(spec, trial_cell(t), args.only, args.only_seeds)]
            if not _next_trial_available(spec, args.trials, trials_now):
                if not any(t.state == TrialState.RUNNING for t in trials_now):
                    return
                time.sleep(min(5, args.heartbeat))  # a running trial may go stale and come back as a retry
                continue
            try:
                ended = []  # this worker's trial (the study's last trial may be another worker's)
                started.clear()
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                               callbacks=[lambda _study, trial: ended.append(trial)])
                storage_errors = 0
                for last in ended:
                    if last.state.name in ("FAIL", "PRUNED") and not last.user_attrs.get("surplus"):
                        reason = last.user_attrs.get("reason") or failures.get(last.number, "see the run log")
                        print(f"[study {spec.name}] trial {last.number} {last.state.name.lower()}: {reason}", flush=True)
            except optuna.exceptions.StorageInternalError as err:
                # The storage failed outside the objective (ask/tell). A trial left running without its heartbeat
                # goes stale, is failed and retried; the worker itself carries on.
                storage_errors = _storage_error(spec.name, err, storage_errors)
            except (ValueError, AssertionError):
                # Another worker judged this trial stale (a heartbeat delayed under load) and failed it while it
                # ran; its retry, already enqueued with the same cell, resumes the finished run directory. Optuna has
                # no exception type for this: telling a trial that is no longer running raises a plain ValueError, or
                # (Optuna 5, objective returned a value) an AssertionError from its post-processing. So the check is
                # the trial's stored state, and anything else is re-raised.
                if not _failed_meanwhile(study, started):
                    raise
                print(f"[study {spec.name}] a trial was marked stale by another worker while running; "
                      f"its retry will reuse the run's checkpoint", flush=True)
            except Interrupted as stop:
                requeue_lost_cells(study, spec, args.seeds)
                print(f"{stop}; the interrupted trial was marked failed and will re-run (resuming its checkpoint) "
                      f"when the same command is run again", flush=True)
                raise SystemExit(130) from None


def _failed_meanwhile(study, numbers: list[int]) -> bool:
    """Whether a trial this worker started (``numbers``) is stored as failed although it was still running here."""
    from optuna.trial import TrialState

    return any(t.number in numbers and t.state == TrialState.FAIL for t in study.get_trials(deepcopy=False))


def _storage_error(name: str, err: Exception, count: int, limit: int = 20) -> int:
    """One line per transient storage error, a short pause, and give up after ``limit`` in a row."""
    count += 1
    cause = err.__cause__ or err
    print(f"[study {name}] storage error ({count}/{limit}), retrying: {type(cause).__name__}: {str(cause).splitlines()[0]}",
          flush=True)
    if count >= limit:
        raise SystemExit(f"error: the study storage kept failing: {cause}")
    time.sleep(min(30, 2 * count))
    return count


def _next_trial_available(spec: StudySpec, trials: int | None, trials_now) -> bool:
    from optuna.trial import TrialState

    if spec.sampler == "grid":
        return any(t.state == TrialState.WAITING for t in trials_now)
    started = [t for t in trials_now if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
               and not t.user_attrs.get("surplus")]
    return len(started) < (trials or 0)


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
        if not _claim(study, frozen):
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


@dataclass(frozen=True)
class CellJob:
    """One grid cell to train without a storage (``run_cells``): plain values, so a spawned process can receive them."""

    spec_name: str
    budget: str
    params: dict[str, Any]  # the cell: axis values and seed
    out: str  # the study directory (the run goes to OUT/runs/CELL)
    threads: int
    command: str
    spec_root: str | None  # $HARNESS_SPECS of the coordinator


def _run_cell(job: CellJob) -> str:
    from harness.method.loop import train

    if job.spec_root:
        os.environ[SPEC_ROOT_ENV] = job.spec_root
    spec = load_study(job.spec_name)
    params = job.params
    cfg = build_config(spec, job.budget, params, params["seed"], threads=job.threads)
    try:
        summary = train(cfg, Path(job.out) / "runs" / cell_key(params), command=job.command)
    except Exception as err:  # one cell's failure must not stop the others; it is re-run by the next call
        return f"{cell_key(params)}: failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return f"{cell_key(params)}: {summary['status']}"


def run_cells(spec: StudySpec, budget: str, seeds: int, out: Path, workers: int, threads: int, command: str,
              only: tuple[str, ...] = ()) -> int:
    """Run every grid cell's run directory without a study storage (a machine without the database, e.g. a lent
    GPU). Finished directories are skipped; the normal study command, run where the storage is, later records
    each finished directory as its trial without training again. Returns the number of cells still unfinished."""
    from harness.common.progress import progress_bar

    if spec.sampler != "grid":
        raise SpecError(f"study {spec.name}: --run-cells needs a grid study (a TPE search needs its storage)")
    cells = [c for c in select_cells(spec, seeds, only) if not run_finished(out / "runs" / cell_key(c))]
    jobs = [CellJob(spec.name, budget, c, str(out), threads, command, os.environ.get(SPEC_ROOT_ENV)) for c in cells]
    print(f"[study {spec.name}] {len(cells)} cell(s) to run into {out}/runs with {workers} process(es)", flush=True)
    with progress_bar(len(cells), f"cells {spec.name} [{budget}]") as bar, \
            mp.get_context("spawn").Pool(workers, maxtasksperchild=1, initializer=_exit_with_parent,
                                         initargs=(os.getpid(),)) as pool:
        for i, line in enumerate(pool.imap_unordered(_run_cell, jobs)):
            print(f"[study {spec.name}] {line}", flush=True)
            bar.update(completed=i + 1)
        # Every result is in: let the workers exit on their own. The context manager's terminate() would SIGTERM a
        # worker that may not have released the result queue's lock yet (the result is read before it does).
        pool.close()
        pool.join()
    return sum(not run_finished(out / "runs" / cell_key(c)) for c in cells)


def run_finished(run_dir: Path) -> bool:
    """A run directory whose summary says it ended (completed or diverged): training it again changes nothing."""
    from harness.method.loop import finished_summary

    return finished_summary(run_dir) is not None


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """SIGTERM this worker within ``poll_s`` of the coordinator's death (even by SIGKILL), so no orphan keeps
    computing unseen; SIGTERM checkpoints a running trial, which re-runs when the same command is run again.

    A watchdog thread polls the parent pid rather than Linux's PR_SET_PDEATHSIG, which fires when the *thread* that
    forked the worker exits: a pool's replacement workers are forked by its handler thread, which exits when the
    pool shuts down, so the kernel killed workers that could still hold the pool's result-queue lock, and the
    coordinator then waited on that lock forever (seen: `--run-cells` hanging after its last cell)."""
    import signal
    import threading

    if os.getppid() != parent_pid:  # the coordinator died before this worker started
        raise SystemExit(130)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child_worker(parent_pid: int, args: WorkerArgs, worker_id: int) -> None:
    _exit_with_parent(parent_pid)
    worker(args, worker_id)


def spawn_workers(n: int, args: WorkerArgs) -> None:
    """Run ``n`` worker processes on this machine (ids 0..n-1) and wait for them; exit if any failed."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child_worker, args=(os.getpid(), args, i)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [p.exitcode for p in procs if p.exitcode != 0]
    if bad:
        raise SystemExit(f"error: {len(bad)} worker(s) exited with codes {bad}")
