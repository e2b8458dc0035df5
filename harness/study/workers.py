"""Running a study: the worker processes that pull trials from its storage (harness.study.storage) and run each
(harness.study.trials), and the cells run outside Optuna (``--run-cells``).

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
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.study.spec import SPEC_ROOT_ENV, SpecError, StudySpec, build_config, cell_key, cell_selected, load_study, select_cells
from harness.study.storage import make_pruner, make_sampler, make_storage, trial_cell
from harness.study.trials import claim_trial, requeue_lost_cells, run_finished, run_trial


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
        if cell_selected(spec, trial_cell(frozen), only, seeds) and claim_trial(study, frozen):
            return frozen._trial_id
    return None


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
