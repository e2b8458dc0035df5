"""The baseline comparison table (what seed 000's Table 1 tried to measure, measured properly).

    python -m harness.baselines [--n 5000] [--results-dir results]

Writes DIR/baselines/{table.csv, table.md, noise_n100.csv, metrics.png, samples.png, samples/*.png,
manifest.json}. Every measured row scores n samples against the 10,000 test images with every registered
metric in every feature space (``harness.evaluation.scoring``), each with its 95% half-sample interval (``<key>_lo``,
``<key>_hi``). The ``seed000-table1`` rows hold the published numbers of seed 000 (their n=100,
Inception-space metrics) in their own ``published_*`` columns and their own markdown table: never measured here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from harness.testbed import assets
from harness.common import markdown
from harness.evaluation import scoring
from harness.evaluation.sampling import generate
from harness.evaluation.small_sample_noise import small_sample_noise
from harness.evaluation.feature_spaces import FEATURE_SPACES, PRIMARY_SPACE
from harness.common.manifest import git_commit, make_manifest, write_json
from harness.common.figures import save_grid, save_grids_panel
from harness.reporting.plots import save_metric_bars
from harness.common.progress import progress_bar
from harness.method.teachers import default_sampler_kwargs, load_teacher

SEED000_SOURCE = "published: seed 000 Table 1 (their n=100, Inception features) - not measured here"
SEED000_ROWS = [  # the student report's own numbers, kept only as labelled reference rows
    {"entry": "DM", "published_precision": 0.71, "published_recall": 0.59, "published_kid_inception": 0.030831},
    {"entry": "pretrained generator", "published_precision": 0.60, "published_recall": 0.48, "published_kid_inception": 0.099935},
    {"entry": "real data (theoretical)", "published_precision": 1.0, "published_recall": 1.0, "published_kid_inception": 0.0},
]
MODELS = ("real-test", "teacher-edm", "teacher-ddpm-huber", "teacher-ddpm-mse", "gan-weak", "gan-strong", "gan-wide")
INFO_COLUMNS = ["model", "entry", "source", "n_samples", "nfe", "ms_per_image", "sampler"]


def model_sampler(model: str, asset_dir=None):
    """(sample_fn(z), noise shape, nfe, sampler description) for a shipped model."""
    if model.startswith("teacher-"):
        teacher, _ = load_teacher(model, asset_dir)
        kwargs = default_sampler_kwargs(teacher)
        return (lambda z: teacher.sample(z, **kwargs)), (1, 28, 28), teacher.nfe(**kwargs), f"{teacher.kind} {kwargs}"
    generator, cfg = assets.load_network(model, asset_dir)
    return generator, (cfg["net"]["latent_dim"],), 1, "one step G(z)"


def real_images(n: int, seed: int, data_root=None) -> torch.Tensor:
    """n training images (disjoint from the test bank): the 'real data' row measures each metric's floor."""
    from harness.testbed.data import load_split

    images, _ = load_split("train", data_root)
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
    return images[idx]


def measure(model: str, n: int, seed: int, refs, asset_dir=None, data_root=None, noise_repeats: int = 20):
    """One measured row (every metric in every space with its half-sample interval), the images it used and its
    n=100 noise table (primary space)."""
    if model == "real-test":
        images, ms, nfe, sampler = real_images(n, seed, data_root), 0.0, 0, "FashionMNIST train split"
    else:
        sample_fn, shape, nfe, sampler = model_sampler(model, asset_dir)
        images, ms = generate(sample_fn, n, shape, seed)
    feats = scoring.featurise_all(images.clamp(-1, 1), refs)  # once per space: the table and the noise study share them
    evaluation = scoring.evaluate_features(feats, refs)
    row = {"model": model, "entry": model, "source": "measured", "n_samples": evaluation.n, "nfe": nfe,
           "ms_per_image": ms, "sampler": sampler}
    for k, v in evaluation.values.items():
        row[k] = v
        row[f"{k}_lo"], row[f"{k}_hi"] = evaluation.interval(k)
    noise = small_sample_noise(refs[PRIMARY_SPACE].features, feats[PRIMARY_SPACE][0], n=100,
                                       repeats=noise_repeats, seed=seed)
    noise.insert(0, "model", model)
    return row, images, noise


def frame_to_markdown(frame: pd.DataFrame) -> str:
    """Plain markdown table (no tabulate dependency)."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return markdown.table(list(map(str, frame.columns)), cells)


def _asset_fingerprint(model: str, asset_dir=None) -> str:
    """sha256 of the asset files behind a row (every feature space's too): a cached row is valid only for these bytes."""
    import hashlib

    names = scoring.required_assets() + ([] if model == "real-test" else [model])
    h = hashlib.sha256()
    for name in names:
        h.update((assets.asset_dir(asset_dir) / f"{name}.pt").read_bytes())
    return h.hexdigest()[:16]


def measure_cached(model: str, args, refs):
    """``measure`` with a per-model cache in DIR/baselines/rows/: an interrupted table keeps its finished rows,
    and rows can be computed as soon as each asset exists (``--models``), then merged by a later full run."""
    cache = Path(args.results_dir) / "baselines" / "rows"
    key = f"{model}-n{args.n}-seed{args.seed}-r{args.noise_repeats}-v2-{_asset_fingerprint(model, args.asset_dir)}"
    files = cache / f"{key}.json", cache / f"{key}.noise.csv", cache / f"{key}.images.pt"
    if all(f.is_file() for f in files):
        print(f"[baselines] {model}: reusing cached row {files[0].name}", flush=True)
        row = json.loads(files[0].read_text())
        return row, torch.load(files[2], weights_only=True), pd.read_csv(files[1])
    t0 = time.time()
    row, images, noise = measure(model, args.n, args.seed, refs, args.asset_dir, args.data_root, args.noise_repeats)
    row["_provenance"] = {"command": " ".join(["python -m harness.baselines"] + sys.argv[1:]), "git_commit": git_commit(),
                          "wall_s": round(time.time() - t0, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          "torch_threads": torch.get_num_threads()}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(images[:64].clone(), files[2])
    noise.to_csv(files[1], index=False)
    write_json(files[0], row)
    return row, images[:64], noise


def to_markdown(table: pd.DataFrame) -> str:
    """Measured rows: one table per feature space (fidelity | diversity | distance, each with its interval); seed
    000's published rows in a table of their own."""
    from harness.reporting.comparison import fmt

    measured = table[table.source == "measured"]
    order = [m for g in ("fidelity", "diversity", "distance") for m in scoring.METRICS if scoring.METRICS[m].group == g]
    parts = []
    for space in FEATURE_SPACES:
        if scoring.key(order[0], space) not in table:
            continue
        cols = ["model", "n"] + [f"{scoring.METRICS[m].header(space)} ({scoring.METRICS[m].group})" for m in order]
        rows = []
        for _, r in measured.iterrows():
            cells = [str(r.model), str(int(r.n_samples))]
            for m in order:
                k = scoring.key(m, space)
                cells.append(fmt(r.get(k), r.get(f"{k}_lo"), r.get(f"{k}_hi"), scoring.METRICS[m].fmt))
            rows.append(cells)
        parts.append(f"## Measured, {space} features (value [95% half-sample interval])\n\n" + markdown.table(cols, rows) + "\n")
    timing = measured[["model", "nfe", "ms_per_image", "sampler"]]
    parts.append("## Samplers\n\n" + frame_to_markdown(timing) + "\n")
    theirs = table[table.model == "seed000-table1"][["entry", "published_precision", "published_recall", "published_kid_inception", "n_samples"]]
    parts.append(f"## Seed 000's Table 1 (published, not measured here: {SEED000_SOURCE})\n\n" + frame_to_markdown(theirs) + "\n")
    return "\n".join(parts)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.baselines", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="generated samples per model (vs the 10,000 test images)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="which measured rows")
    p.add_argument("--noise-repeats", type=int, default=20, help="repeats of the n=100 evaluation (seed 000's sample size)")
    p.add_argument("--asset-dir", default=None, help="assets directory (default: shipped harness/assets)")
    p.add_argument("--data-root", default=None, help="FashionMNIST IDX files, for the real-data row")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.n < 500:
        raise SystemExit(f"error: --n {args.n} is too small for these metrics (use >= 500; the default is 5000)")
    if args.threads:
        torch.set_num_threads(args.threads)
    git_commit()
    out = Path(args.results_dir) / "baselines"
    t0 = time.time()
    try:
        refs = scoring.references(args.asset_dir)
    except assets.AssetNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    rows, noise_tables, grids, provenance = [], [], {}, {}
    with progress_bar(len(args.models), "baselines") as bar:
        for model in args.models:
            try:
                row, images, noise = measure_cached(model, args, refs)
            except (assets.AssetNotFoundError, RuntimeError) as err:  # DataNotFoundError is a RuntimeError
                print(f"[baselines] skipping {model}: {err}", file=sys.stderr, flush=True)
                bar.update(advance=1)
                continue
            provenance[model] = row.pop("_provenance", None)
            rows.append(row)
            noise_tables.append(noise)
            grids[model] = images[:64]
            save_grid(images[:64], out / "samples" / f"{model}.png", title=model)
            bar.update(advance=1, model=model)
    rows += [{"model": "seed000-table1", "source": SEED000_SOURCE, "n_samples": 100, **r} for r in SEED000_ROWS]
    table = pd.DataFrame(rows)
    table = table[INFO_COLUMNS + [c for c in table.columns if c not in INFO_COLUMNS]]
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "table.csv", index=False)
    measured = table[table.source == "measured"].reset_index(drop=True)
    noise = pd.concat(noise_tables) if noise_tables else pd.DataFrame()
    summary = noise.groupby("model")[["precision", "recall", "kid"]].agg(["mean", "std", "min", "max"]) if len(noise) else None
    if summary is not None:
        summary.columns = [f"{a}_{b}" for a, b in summary.columns]
        summary = summary.reset_index()
        summary.to_csv(out / "noise_n100.csv", index=False)
    header = (f"# Baselines (measured, n = {args.n} generated vs 10,000 test images, every feature space)\n\n"
              f"Each measured value carries its 95% interval from {scoring.HALF_SAMPLES} half-samples (one evaluation; "
              f"see harness.evaluation.scoring). KID and FID are raw values in each classifier's feature space, not Inception's. "
              f"Seed 000's published numbers (n=100, Inception space) are in their own table at the end. "
              f"`real-test` scores {args.n} real FashionMNIST *training* images against the test bank: the floor each "
              f"metric reaches for real data at this n (the test set against itself would be trivially perfect). "
              f"`ms_per_image` is the wall time of generating the table's samples (batch 500, CPU threads as in the "
              f"manifest); `benchmarks/` gives the clean medians.\n\n")
    md = header + to_markdown(table)
    if summary is not None:
        md += (f"\n## How noisy are these metrics at seed 000's n = 100? ({args.noise_repeats} independent draws of 100 "
               f"generated and 100 real samples per model)\n\n" + frame_to_markdown(summary) + "\n")
    (out / "table.md").write_text(md)
    if len(measured):
        save_metric_bars(measured, out / "metrics.png", title=f"baselines, n={args.n} (error bars: 95% half-sample intervals)")
        save_grids_panel(grids, out / "samples.png")
    write_json(out / "manifest.json", make_manifest(
        command=" ".join(["python -m harness.baselines"] + (argv if argv is not None else sys.argv[1:])), config=vars(args),
        seed=args.seed, wall_s=time.time() - t0, rows_computed_by=provenance, assets={k: {"git_commit": v.get("git_commit"), "wall_s": v.get("wall_s")}
                                                          for k, v in assets.read_manifest(args.asset_dir).items()}))
    print(md)


if __name__ == "__main__":
    main()
