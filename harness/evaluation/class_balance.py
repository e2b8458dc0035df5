"""Which classes a DI run gains and loses: the class histogram of its samples before and after, per feature space.

Class TV and max class share (harness.evaluation.scoring) summarise a histogram in one number; this module keeps the
histogram itself, so a report can show *which* classes the generator drifts towards. A run trained by this
version of the harness stores the histograms of its start and final evaluations in summary.json
(``class_hists``). For an older run they are recomputed from its checkpoint, with the run's own evaluation
latents (so start and final are paired, exactly as its final evaluation was) and written to
``class_hist.json`` beside it, with a manifest:

    python -m harness.class_balance 'results/seed_report_fixes/runs/fix=*'    # globs or directories

The same histograms for the shipped models (the teachers DI distils, the GANs it starts from), so a report can ask
whether DI moves the generator's classes towards the test split's balance or towards its teacher's:

    python -m harness.class_balance --models teacher-ddpm-huber teacher-edm --n 2000   # -> results/class_balance/
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from harness.common.run_dir import RunDir


class ClassHistError(RuntimeError):
    """A run whose class histograms can be neither read nor recomputed; the message is one line."""


def _class_hists_of(images: torch.Tensor, refs) -> dict[str, list[float]]:
    """Each space's class histogram of ``images`` (its classifier's predicted classes)."""
    from harness.evaluation.metrics import class_histogram
    from harness.evaluation.scoring import featurise_all

    return {space: [float(v) for v in class_histogram(preds, 10)]
            for space, (_, preds) in featurise_all(images.clamp(-1, 1), refs).items()}


def stored_class_hists(run_dir: Path) -> dict | None:
    """{"n", "start": {space: shares}, "final": {space: shares}} from summary.json or class_hist.json, else None."""
    run_dir = Path(run_dir)
    summary = RunDir(run_dir).read_summary() or {}
    start, final = (summary.get(w) or {} for w in ("start", "final"))
    if start.get("class_hists") and final.get("class_hists"):
        return {"n": final["n"], "start": start["class_hists"], "final": final["class_hists"]}
    path = RunDir(run_dir).class_hist
    if not path.is_file():
        return None
    written = json.loads(path.read_text())
    return {k: written[k] for k in ("n", "start", "final")}


@torch.no_grad()
def compute_class_hists(run_dir: Path, asset_dir=None) -> dict:
    """Recompute a finished run's start and final histograms from its config and checkpoint (same latents as
    its evaluations: harness.evaluation.run_evaluator.Evaluator), and write them to class_hist.json with a manifest."""
    from harness.method.config import DIConfig
    from harness.method.build import build_nets
    from harness.evaluation.run_evaluator import Evaluator
    from harness.method.teachers import TEACHERS
    from harness.common.manifest import make_manifest, write_json

    run_dir = Path(run_dir)
    t0 = time.time()
    ckpt_path = RunDir(run_dir).checkpoint
    if not RunDir(run_dir).config.is_file() or not ckpt_path.is_file():
        raise ClassHistError(f"{run_dir}: no class histograms stored and no config.json + checkpoint.pt to recompute them")
    cfg = DIConfig.load(RunDir(run_dir).config)
    if TEACHERS[cfg.teacher].analytic:
        raise ClassHistError(f"{run_dir}: the toy has modes, not classes (see its mode-mass error)")
    torch.manual_seed(cfg.seed)  # build_nets draws fresh weights for an aux net from scratch; the same draw as training
    nets = build_nets(cfg, asset_dir)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if state["_meta"]["step"] != cfg.rounds:
        raise ClassHistError(f"{run_dir}: its checkpoint is at round {state['_meta']['step']}, not the last ({cfg.rounds})")
    final_g = copy.deepcopy(nets.generator)
    final_g.load_state_dict(state["G_ema" if cfg.eval.generator == "ema" else "G"])
    evaluator = Evaluator(cfg, nets, asset_dir)
    hists = {which: _class_hists_of(evaluator.samples(g, cfg.eval.final_n), evaluator.refs)
             for which, g in (("start", nets.generator), ("final", final_g))}
    out = {"n": cfg.eval.final_n, **hists}
    write_json(RunDir(run_dir).class_hist, {**out, "manifest": make_manifest(
        command=f"python -m harness.class_balance {run_dir}", config=cfg.to_dict(), seed=cfg.seed,
        wall_s=time.time() - t0)})
    return out


def class_hists(run_dir: Path, asset_dir=None) -> dict:
    """The run's start and final class histograms: stored, else recomputed from its checkpoint."""
    return stored_class_hists(run_dir) or compute_class_hists(run_dir, asset_dir)


def reference_class_shares(asset_dir=None) -> dict[str, list[float]]:
    """Each space's class histogram of the 10,000 test images as its classifier labels them (the target)."""
    from harness.evaluation.scoring import references

    return {space: [float(v) for v in ref.class_hist] for space, ref in references(asset_dir).items()}


MODELS_FILE = "models.json"


def model_class_hists(model: str, n: int, seed: int, asset_dir=None) -> dict[str, list[float]]:
    """A shipped model's class histogram per space, on n samples from deterministic noise (its baseline sampler)."""
    from harness.testbed.baselines import model_sampler
    from harness.evaluation.sampling import generate
    from harness.evaluation.scoring import references

    sample_fn, shape, _, _ = model_sampler(model, asset_dir)
    images, _ = generate(sample_fn, n, shape, seed)
    return _class_hists_of(images, references(asset_dir))


def load_model_hists(results_dir: Path) -> dict:
    """model -> {"n", "seed", "class_hists": {space: shares}} as written by ``--models`` (empty if none yet)."""
    path = Path(results_dir) / "class_balance" / MODELS_FILE
    return json.loads(path.read_text())["models"] if path.is_file() else {}


def write_model_hists(models: list[str], n: int, seed: int, results_dir: Path, command: str) -> dict:
    """Measure the models not yet stored at this n and seed; the file keeps the others (one manifest per model)."""
    from harness.common.manifest import make_manifest, write_json
    from harness.common.progress import progress_bar

    stored = load_model_hists(results_dir)
    todo = [m for m in models if not (m in stored and stored[m]["n"] == n and stored[m]["seed"] == seed)]
    with progress_bar(len(todo), "model class histograms") as bar:
        for i, model in enumerate(todo):
            t0 = time.time()
            stored[model] = {"n": n, "seed": seed, "class_hists": model_class_hists(model, n, seed),
                             "manifest": make_manifest(command=command, config={"model": model, "n": n}, seed=seed,
                                                       wall_s=time.time() - t0)}
            write_json(Path(results_dir) / "class_balance" / MODELS_FILE, {"models": stored})
            bar.update(completed=i + 1)
    return stored


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.class_balance", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", nargs="*", help="run directories or glob patterns (quote them)")
    p.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                   help="shipped models (e.g. teacher-ddpm-huber gan-weak) to measure into RESULTS_DIR/class_balance/")
    p.add_argument("--n", type=int, default=2000, help="--models: samples per model")
    p.add_argument("--seed", type=int, default=0, help="--models: seed of the sampling noise")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    args = p.parse_args(argv)
    if not args.runs and not args.models:
        p.error("give run directories, or --models")
    from harness.testbed.data import CLASSES

    if args.models:
        from harness.testbed.baselines import model_sampler

        try:
            for m in args.models:
                model_sampler(m)
        except Exception as err:  # an unknown or missing asset
            raise SystemExit(f"error: --models: {err}".splitlines()[0]) from None
        command = " ".join(["python -m harness.class_balance"] + (argv if argv is not None else sys.argv[1:]))
        stored = write_model_hists(args.models, args.n, args.seed, args.results_dir, command)
        for m in args.models:
            h = stored[m]["class_hists"]
            print(f"{m} (n={stored[m]['n']}): " + "; ".join(
                f"{s} largest class {CLASSES[max(range(10), key=h[s].__getitem__)]} ({max(h[s]):.3f})" for s in h), flush=True)
        if not args.runs:
            return
    import glob

    dirs = sorted({Path(d) for pat in args.runs for d in glob.glob(pat) if RunDir(d).summary.is_file()})
    if not dirs:
        raise SystemExit(f"error: no finished run directory matches {' '.join(args.runs)}")
    from harness.common.progress import progress_bar

    with progress_bar(len(dirs), "class histograms") as bar:
        for i, d in enumerate(dirs):
            try:
                h = class_hists(d)
            except ClassHistError as err:
                raise SystemExit(f"error: {err}") from None
            top = {s: max(range(10), key=lambda c: h["final"][s][c] - h["start"][s][c]) for s in h["final"]}
            print(f"{d}: n={h['n']}; class gaining most share: " + ", ".join(
                f"{s} {CLASSES[c]} ({h['start'][s][c]:.3f} -> {h['final'][s][c]:.3f})" for s, c in top.items()), flush=True)
            bar.update(completed=i + 1)


if __name__ == "__main__":
    main(sys.argv[1:])
