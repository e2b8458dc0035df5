"""A study's Optuna storage: its URL and folder, the storage with heartbeats, sampler and pruner, creating or
loading a study (every grid cell enqueued once), and the dashboard annotations of a stored study."""

from __future__ import annotations

import inspect
import time
from pathlib import Path

from harness.study.growth import grow_study, grown_params, restore_interrupted_growth, stored_choices, widened_choices
from harness.study.spec import SpecError, StudySpec, cell_key, objective_key, objective_name, select_cells


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


def trial_cell(trial) -> dict | None:
    """A trial's grid cell: its enqueued (fixed) params, else its params once every one is suggested; None while
    another worker is still in the middle of suggesting them (its ``params`` then lack the seed)."""
    params = trial.system_attrs.get("fixed_params") or trial.params or {}
    return params if "seed" in params else None
