"""Optuna studies over the ablation axes.

    python -m harness.study NAME [--budget smoke|cpu|gpu] [--trials N] [--seeds K] [--storage URL]
                                 [--workers N] [--results-dir DIR] [--report]

Specs are files: ``studies/NAME.toml`` (axes, sampler, seeds, budgets, objective, pruner, baselines) over
``ablations/AXIS.toml`` (what an axis changes and why, the config field(s), values or range).

* Categorical studies (``sampler = "grid"``): every value x every seed is enqueued once as a WAITING trial
  when the study is created; workers pop them atomically from the storage, so several workers (processes
  or machines) never run a cell twice. Continuous studies (``"tpe"``): Optuna's TPE sampler, ``trials`` in all.
* Each trial builds one ``DIConfig`` and calls ``harness.method.loop.train`` (the same function as
  ``python -m harness.run``); it reports the objective at every curve evaluation for the median pruner and
  stores every metric in every feature space, the start and final evaluations (with half-samples), its paired
  change and verdict, score gap, wall time and its run directory as attributes.
  Objective: final FID in the primary (vgg) feature space, minimised: unlike KID alone it rises when recall
  falls (see harness.study.spec.STUDY_METRICS). Divergence ends the trial as pruned with its reason.
* Storage: SQLite at DIR/NAME/study.db by default (any Optuna RDB URL works), with heartbeats: a trial whose
  worker was killed goes stale, is marked failed and re-enqueued with the same parameters, and its rerun
  resumes the run directory's checkpoint. Rerunning the same command after a kill therefore continues.
* Outputs (end of study, or ``--report`` from the storage alone): see ``harness.study.tables``.

This module is the command line; the specs are read by ``harness.study.spec``, the storage and workers live in
``harness.study.workers``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from harness.method.config import ConfigError
from harness.study.spec import BUDGETS, PRUNERS, SPEC_ROOT_ENV, SpecError, all_value_configs, available_studies, load_study
from harness.study.storage import annotate_existing, count_finished, create_or_load, storage_url, study_dir
from harness.study.trials import record_finished_cells, requeue_lost_cells
from harness.study.workers import WorkerArgs, run_cells, spawn_workers, worker


def worker_threads(requested: int, workers: int) -> int:
    """Torch threads per worker process: the requested number, else 1 when several workers share the machine (each
    at torch's default would oversubscribe the cores: two 2-thread workers on 2 cores run a round ~2x slower), else
    0 (torch's default)."""
    return requested or (1 if workers > 1 else 0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.study", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"studies: {', '.join(available_studies())}\n\nbrowse a study with:\n"
                                       "  optuna-dashboard sqlite:///results/NAME/study.db")
    p.add_argument("name", help="study name (a file studies/NAME.toml)")
    p.add_argument("--budget", choices=BUDGETS, default=None, help="smoke (a plumbing check, minutes), cpu (hours on 2 cores), gpu; default gpu if CUDA else cpu")
    p.add_argument("--trials", type=int, default=None, help="TPE studies: number of trials (default from the budget)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per grid cell (default: an existing study's own, else the budget's); more than an "
                        "existing study holds grows it, fewer records and trains only those seeds' cells")
    p.add_argument("--storage", default=None, help="Optuna RDB URL (default sqlite:///DIR/NAME/study.db)")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine sharing the storage")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--report", action="store_true", help="only regenerate tables and plots from the storage")
    p.add_argument("--wide", action="store_true", help="print the full table (values with intervals, full verdicts; "
                                                       "200 columns) instead of the compact one")
    p.add_argument("--run-cells", action="store_true",
                   help="grid studies: only train the cells' run directories, with no storage (e.g. on a lent GPU "
                        "machine); the same command without this flag later records them as trials without training")
    p.add_argument("--only", action="append", default=[], metavar="VALUE",
                   help="grid studies: only the cells with this axis value (repeatable): only they are queued, recorded and "
                        "trained, while other values' cells queued by earlier calls stay queued; a later call with "
                        "other values adds their cells to the same study, and its table shows the values run so far")
    p.add_argument("--pruner", choices=PRUNERS, default=None,
                   help="override the spec's pruner (grid ablations default to none, searches to median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: default; 1 with several workers)")
    p.add_argument("--heartbeat", type=int, default=10, help="seconds between trial heartbeats")
    p.add_argument("--grace", type=int, default=60, help="seconds without heartbeat before a running trial is failed and retried (generous: heartbeats are delayed under heavy load)")
    args = p.parse_args(argv)
    from harness.common.manifest import git_commit

    git_commit()  # pin the commit of the code that runs now (files may change while a long study runs)
    if args.workers < 1:
        raise SystemExit("error: --workers must be >= 1")
    try:
        spec = load_study(args.name)
        if args.pruner == spec.pruner:
            args.pruner = None  # the spec's own pruner: the canonical study, not an override
        if args.pruner:
            spec = dataclasses.replace(spec, pruner=args.pruner)
    except SpecError as err:
        raise SystemExit(f"error: {err}") from None
    import torch

    budget = args.budget or ("gpu" if torch.cuda.is_available() else "cpu")
    if budget == "gpu" and not args.report and not torch.cuda.is_available():
        # it happened: a lent GPU machine whose torch saw no CUDA trained 65 runs on its CPU cores, unnoticed
        print(f"[study {args.name}] warning: --budget gpu but CUDA is not available: training on the CPU "
              f"(each run's manifest records its device)", file=sys.stderr, flush=True)
    b = spec.budgets[budget]
    seeds = args.seeds or int(b.get("seeds", 1))
    trials = args.trials or int(b.get("trials", 10))
    out = study_dir(Path(args.results_dir), spec.name, budget, args.pruner)
    out.mkdir(parents=True, exist_ok=True)
    url = storage_url(Path(args.results_dir), spec.name, budget, args.storage, args.pruner)
    command = " ".join(["python -m harness.study"] + (argv if argv is not None else sys.argv[1:]))

    from harness.testbed import assets
    from harness.study.tables import write_study_report

    t0 = time.time()
    if not args.report:
        try:  # the whole spec is checked before any work, here or by --run-cells on another machine
            from harness.method.build import check_assets

            for value_cfg in all_value_configs(spec, budget):
                check_assets(value_cfg)
        except (SpecError, ConfigError, assets.AssetNotFoundError) as err:
            raise SystemExit(f"error: {err}") from None
    threads = worker_threads(args.threads, args.workers)
    if args.run_cells:
        try:
            left = run_cells(spec, budget, seeds, out, args.workers, threads, command, tuple(args.only))
        except SpecError as err:
            raise SystemExit(f"error: {err}") from None
        print(f"[study {spec.name}] {left} cell(s) unfinished; run the study command without --run-cells where its "
              f"storage is to record the finished ones", flush=True)
        return
    finished_before = finished_after = 0
    if not args.report:
        try:
            study = create_or_load(spec, budget, args.seeds, url, args.heartbeat, args.grace, trials, tuple(args.only))
            seeds = int(study.user_attrs["seeds"])  # the most seeds any call asked for
            # a call asking for fewer seeds than an earlier one queued records and trains only its own
            only_seeds = args.seeds if args.seeds and args.seeds < seeds else None
            # Only here (one process, before workers start) and in an interrupted worker: never two at once.
            finished_before = count_finished(study)
            requeued = requeue_lost_cells(study, spec, seeds)
            if requeued:
                print(f"[study {spec.name}] re-enqueued {requeued} cell(s) whose trial failed", flush=True)
            recorded = record_finished_cells(study, spec, budget, seeds, out, tuple(args.only), only_seeds)
            if recorded:
                print(f"[study {spec.name}] recorded {recorded} cell(s) whose run directory had already finished",
                      flush=True)
        except (SpecError, ConfigError, assets.AssetNotFoundError) as err:
            raise SystemExit(f"error: {err}") from None
        wargs = WorkerArgs(name=spec.name, budget=budget, seeds=seeds, url=url, out=str(out), trials=trials,
                           heartbeat=args.heartbeat, grace=args.grace, threads=threads, pruner=args.pruner,
                           spec_root=os.environ.get(SPEC_ROOT_ENV), only=tuple(args.only), only_seeds=only_seeds)
        print(f"[study {spec.name}] budget={budget} storage={url} workers={args.workers}", flush=True)
        if args.workers == 1:
            worker(wargs, 0)
        else:
            os.environ["HARNESS_PLAIN_PROGRESS"] = "1"  # several processes: plain status lines, not rich bars
            spawn_workers(args.workers, wargs)
        finished_after = count_finished(study)
        if finished_after == finished_before:
            print(f"[study {spec.name}] no trial left to run: the committed tables and plots are left as they are\n"
                  f"  (`python -m harness.study {spec.name} --report` redraws them)", flush=True)
    if args.report:
        annotate_existing(spec, budget, url)
    ran = finished_after > finished_before
    write_study_report(spec, budget, url, out, command=command, wall_s=time.time() - t0, results_dir=Path(args.results_dir),
                       report_only=not ran, trials_finished=finished_after - finished_before, write=args.report or ran,
                       wide=args.wide)


if __name__ == "__main__":
    main()
