"""What can n samples resolve? The spread of every metric over independent evaluations at seed 000's n = 100
and at the harness's n = 5,000, and what that means for seed 000's Table 1.

    python -m harness.sample_size [--models gan-weak gan-strong] [--n 100 5000] [--repeats 100 8]

For each model and each n, ``repeats`` independent evaluations, each on n freshly generated samples (new latents
every time), scored with every registered metric in every feature space, under two protocols:

* ``bank``: n samples against all 10,000 test images (the harness's protocol: every table scores this way);
* ``matched``: n samples against n test images drawn at random (seed 000's protocol: "100 sampled images from
  each model"), only where n <= 1,000. Within a repeat every model meets the same real draw, which makes the
  difference of two models less noisy than fully independent evaluations would: the generous case for n = 100.

The spread over repeats is the sampling noise of one evaluation. At the largest n the table also reports the
mean half-sample standard deviation (``harness.evaluation.scoring``): the interval every other table prints, checked here
against the spread of truly independent evaluations.

The first two models form a pair: their difference at each n (repeat r of one minus repeat r of the other), its
spread and how often one evaluation gets its sign wrong. The half-width 1.96 sd of that difference is the
smallest difference one comparison at that n can tell from noise; seed 000's published differences (their own
numbers, in Inception features, labelled as theirs) are set beside it.

Writes DIR/sample_size/{draws.csv, table.csv, pairs.csv, table.md, spread.png, manifest.json}.
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
from harness.evaluation.sampling import featurise, generate
from harness.evaluation.feature_spaces import FEATURE_SPACES
from harness.common.manifest import git_commit, make_manifest, write_json
from harness.common.progress import progress_bar

MATCHED_MAX_N = 1000  # above this the harness only ever scores against the full test bank
REPORTED = ("precision", "recall", "kid", "fid", "class_tv")  # the columns of table.md (draws.csv has every metric)
# Seed 000's Table 1 (their n = 100, Inception features): published numbers, never measured here.
SEED000_TABLE1 = {"DM": {"precision": 0.71, "recall": 0.59, "kid": 0.030831},
                  "pretrained generator": {"precision": 0.60, "recall": 0.48, "kid": 0.099935}}


def draw_seed(base: int, model_index: int, n: int, repeat: int) -> int:
    """A distinct latent seed per (model, n, repeat): no two evaluations share a sample."""
    return base * 1_000_003 + model_index * 100_003 + n * 101 + repeat


def real_subset(n: int, repeat: int, base: int, total: int = 10_000) -> torch.Tensor:
    """Indices of the n test images of one repeat's matched evaluation (shared by every model in that repeat)."""
    g = torch.Generator().manual_seed(base * 7919 + n * 31 + repeat)
    return torch.randperm(total, generator=g)[:n]


def sampler(model: str, asset_dir=None, data_root=None):
    """(images(n, seed)) for a model: a shipped generator/teacher, or ``real-test`` (FashionMNIST training images,
    the floor every metric reaches for real data)."""
    if model == "real-test":
        from harness.testbed.data import load_split

        train, _ = load_split("train", data_root)

        def images(n, seed):
            return train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]]

        return images
    from harness.testbed.baselines import model_sampler

    sample_fn, shape, _, _ = model_sampler(model, asset_dir)
    return lambda n, seed: generate(sample_fn, n, shape, seed)[0]


def score_draw(feats: dict, refs: dict[str, scoring.Reference], real_idx: torch.Tensor | None,
               half_samples: int) -> scoring.Evaluation:
    """Every metric in every space for one draw: against the whole bank, or (``real_idx``) against that subset."""
    if real_idx is not None:
        refs = {s: scoring.Reference(s, r.features[real_idx], r.labels[real_idx]) for s, r in refs.items()}
    return scoring.evaluate_features(feats, refs, half_samples)


def measure(models: list[str], ns: list[int], repeats: list[int], refs, seed: int = 0, asset_dir=None,
            data_root=None, half_sample_n: int | None = None) -> pd.DataFrame:
    """One row per (model, n, protocol, repeat) with every flat metric key; at ``half_sample_n`` also
    ``<key>_hs_sd`` (the half-sample sd of that single evaluation)."""
    rows = []
    samplers = {m: sampler(m, asset_dir, data_root) for m in models}
    with progress_bar(sum(repeats) * len(models), "sample_size") as bar:
        for n, reps in zip(ns, repeats):
            for r in range(reps):
                real_idx = real_subset(n, r, seed) if n <= MATCHED_MAX_N else None
                for i, model in enumerate(models):
                    with torch.no_grad():
                        images = samplers[model](n, draw_seed(seed, i, n, r)).clamp(-1, 1)
                        feats = {s: featurise(ref.network, images) for s, ref in refs.items()}
                    protocols = [("bank", None)] + ([("matched", real_idx)] if real_idx is not None else [])
                    for protocol, idx in protocols:
                        hs = scoring.HALF_SAMPLES if (n == half_sample_n and protocol == "bank") else 0
                        ev = score_draw(feats, refs, idx, hs)
                        row = {"model": model, "n": n, "n_real": n if idx is not None else len(next(iter(refs.values())).features),
                               "protocol": protocol, "repeat": r, **ev.values}
                        if hs:
                            row.update({f"{k}_hs_sd": ev.sd(k) for k in ev.values})
                        rows.append(row)
                    bar.update(advance=1, n=n, model=model)
    return pd.DataFrame(rows)


def metric_keys(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if scoring.is_metric_key(c)]


def sd_interval(sd: float, repeats: int) -> tuple[float, float]:
    """95% interval of a standard deviation estimated from ``repeats`` draws (chi-square, normal data): with few
    repeats the spread itself is uncertain, which bounds how well the half-sample sd can be checked."""
    from scipy.stats import chi2

    if repeats < 2 or sd != sd:
        return float("nan"), float("nan")
    dof = repeats - 1
    return sd * (dof / chi2.ppf(0.975, dof)) ** 0.5, sd * (dof / chi2.ppf(0.025, dof)) ** 0.5


def summarise(draws: pd.DataFrame) -> pd.DataFrame:
    """Per (model, n, protocol): mean, sd (ddof 1), 2.5% and 97.5% quantiles over repeats, the 95% half-width of
    one evaluation (1.96 sd) and, where measured, the mean half-sample sd."""
    rows = []
    for (model, n, protocol), g in draws.groupby(["model", "n", "protocol"], sort=False):
        row = {"model": model, "n": int(n), "n_real": int(g["n_real"].iloc[0]), "protocol": protocol, "repeats": len(g)}
        for k in metric_keys(draws):
            v = g[k].astype(float)
            sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
            sd_lo, sd_hi = sd_interval(sd, len(v))
            row.update({f"{k}_mean": float(v.mean()), f"{k}_sd": sd, f"{k}_sd_lo": sd_lo, f"{k}_sd_hi": sd_hi,
                        f"{k}_q025": float(v.quantile(0.025)), f"{k}_q975": float(v.quantile(0.975)),
                        f"{k}_halfwidth": scoring.Z95 * sd})
            if f"{k}_hs_sd" in g and g[f"{k}_hs_sd"].notna().any():
                row[f"{k}_hs_sd"] = float(g[f"{k}_hs_sd"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def pair_differences(draws: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Per (n, protocol): the difference b - a over repeats (repeat r of each), its mean and sd, the 95%
    half-width of one comparison (1.96 sd), and the share of repeats whose sign disagrees with the mean's."""
    rows = []
    for (n, protocol), g in draws.groupby(["n", "protocol"], sort=False):
        ga = g[g.model == a].set_index("repeat")
        gb = g[g.model == b].set_index("repeat")
        common = ga.index.intersection(gb.index)
        if len(common) < 2:
            continue
        row = {"pair": f"{b} - {a}", "n": int(n), "protocol": protocol, "repeats": len(common)}
        for k in metric_keys(draws):
            d = (gb.loc[common, k] - ga.loc[common, k]).astype(float)
            mean, sd = float(d.mean()), float(d.std(ddof=1))
            row.update({f"{k}_mean": mean, f"{k}_sd": sd, f"{k}_halfwidth": scoring.Z95 * sd,
                        f"{k}_sign_wrong": float(((d > 0) != (mean > 0)).mean())})
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(v, spec=".3g") -> str:
    return "–" if v is None or v != v else format(v, spec)


def to_markdown(summary: pd.DataFrame, pairs: pd.DataFrame, models: list[str], ns: list[int]) -> str:
    spaces = [s for s in FEATURE_SPACES if f"{scoring.key('kid', s)}_mean" in summary.columns]
    parts = [f"# How much one evaluation varies: n = {', '.join(map(str, ns))}\n",
             "Every value below is measured here over independent evaluations (fresh latents each time): mean, "
             "sd over repeats, and the 95% half-width (1.96 sd) of a single evaluation. `bank`: n samples vs the "
             "10,000 test images (every harness table); `matched`: n samples vs n random test images (seed 000's "
             "protocol). KID and FID are raw values in each classifier's feature space. "
             "At the largest n the sd over repeats carries its own 95% interval (chi-square) and `half-sample sd` is "
             "the mean of the single-evaluation sd that the harness's intervals use: inside that interval, the "
             "harness's intervals are as wide as the evaluations really vary.\n"]
    for space in spaces:
        cols = ["model", "n", "protocol", "repeats"] + [scoring.METRICS[m].header(space) for m in REPORTED]
        rows = []
        for _, r in summary.iterrows():
            cells = [r.model, str(r.n), r.protocol, str(r.repeats)]
            for m in REPORTED:
                k = scoring.key(m, space)
                cell = f"{_fmt(r[f'{k}_mean'], '.4g')} ± {_fmt(r[f'{k}_halfwidth'])} (sd {_fmt(r[f'{k}_sd'])}"
                hs = r.get(f"{k}_hs_sd")
                if hs is not None and hs == hs:  # the check of the half-sample sd: is it inside the sd's interval?
                    cell += f" [{_fmt(r[f'{k}_sd_lo'])}, {_fmt(r[f'{k}_sd_hi'])}]; half-sample sd {_fmt(hs)}"
                cell += ")"
                cells.append(cell)
            rows.append(cells)
        parts.append(f"## {space} features (mean ± 95% half-width of one evaluation)\n\n" + markdown.table(cols, rows) + "\n")
    if len(pairs):
        parts.append(_pairs_markdown(pairs, spaces))
        parts.append(_seed000_markdown(pairs, spaces, models))
    return "\n".join(parts)


def _pairs_markdown(pairs: pd.DataFrame, spaces: list[str]) -> str:
    cols = ["pair", "space", "n", "protocol", "repeats"] + [f"Δ {scoring.METRICS[m].label}" for m in REPORTED]
    rows = []
    for space in spaces:
        for _, r in pairs.iterrows():
            cells = [r.pair, space, str(r.n), r.protocol, str(r.repeats)]
            for m in REPORTED:
                k = scoring.key(m, space)
                cells.append(f"{_fmt(r[f'{k}_mean'], '.3g')} ± {_fmt(r[f'{k}_halfwidth'])} "
                             f"(sign wrong {100 * r[f'{k}_sign_wrong']:.0f}%)")
            rows.append(cells)
    return ("## One comparison of two models (difference per repeat: mean ± 95% half-width; how often one "
            "comparison gets the sign wrong)\n\n" + markdown.table(cols, rows) + "\n")


def _seed000_markdown(pairs: pd.DataFrame, spaces: list[str], models: list[str]) -> str:
    """Seed 000's published differences beside the half-width one comparison at their n (matched, n = 100) has
    here. Precision and recall are fractions in any feature space; KID is not comparable across spaces, so it is
    set beside by its relative size (difference / mean level)."""
    theirs = {m: SEED000_TABLE1["pretrained generator"][m] - SEED000_TABLE1["DM"][m] for m in ("precision", "recall")}
    small = pairs[(pairs.n == 100) & (pairs.protocol == "matched")]
    if not len(small):
        return ""
    r = small.iloc[0]
    large = pairs[pairs.protocol == "bank"].sort_values("n").iloc[-1]
    cols = ["metric", "seed 000's difference (theirs, published, Inception features)", "space",
            "95% half-width of one comparison at n = 100 (measured here)", "resolvable?",
            f"this pair's mean difference at n = 100 (matched) / n = {int(large.n)} (bank)"]
    rows = []
    for m, d in theirs.items():
        for space in spaces:
            k = scoring.key(m, space)
            hw = r[f"{k}_halfwidth"]
            rows.append([m, f"{d:+.2f} (generator vs DM)", space, f"±{hw:.3f}",
                         "yes" if abs(d) > hw else "no: within the noise of one comparison",
                         f"{r[f'{k}_mean']:+.3f} / {large[f'{k}_mean']:+.3f}"])
    return ("## Seed 000's Table 1 at n = 100 (their numbers are theirs; the half-widths are measured here on the pair "
            f"`{r.pair}`, matched protocol)\n\n" + markdown.table(cols, rows) + "\n\n"
            "A difference smaller than the half-width cannot be told from the noise of a single comparison at n = 100; "
            "one at about the half-width is detected only half the time. The last column shows what n = 100 does to "
            "a real difference besides adding noise: the matched protocol's small real set also shifts the metric "
            "itself (a 100-image real manifold is coarse), so a difference at n = 100 need not equal the one at "
            "n = 5,000. Their KID (Inception features) has no "
            "counterpart scale here: see the KID columns above for its relative spread at n = 100.\n")


def save_spread_plot(draws: pd.DataFrame, path: Path) -> None:
    """Per metric and space: the distribution of single evaluations per (model, n, protocol) as box plots."""
    from harness.common.figures import plt, save_figure

    spaces = [s for s in FEATURE_SPACES if scoring.key("kid", s) in draws]
    groups = list(draws.groupby(["n", "protocol", "model"], sort=True).groups)
    fig, axes = plt.subplots(len(spaces), len(REPORTED), figsize=(3.2 * len(REPORTED), 0.35 * len(groups) + 2.0 * len(spaces)),
                             squeeze=False)
    for i, space in enumerate(spaces):
        for j, m in enumerate(REPORTED):
            ax, k = axes[i][j], scoring.key(m, space)
            data = [draws[(draws.n == n) & (draws.protocol == p) & (draws.model == mo)][k].to_numpy() for n, p, mo in groups]
            ax.boxplot(data, orientation="horizontal", widths=0.6)
            ax.set_yticks(range(1, len(groups) + 1), [f"{mo} n={n} {p}" for n, p, mo in groups] if j == 0 else [""] * len(groups),
                          fontsize=6)
            ax.set_title(scoring.METRICS[m].header(space), fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle("single evaluations over independent draws (box: quartiles, whiskers 1.5 IQR)", fontsize=9)
    save_figure(fig, path, dpi=110)


def write_outputs(draws: pd.DataFrame, out: Path, models: list[str], ns: list[int]) -> str:
    """Tables, plot and markdown from the draws (the expensive part, kept in draws.csv)."""
    summary = summarise(draws)
    pairs = pair_differences(draws, models[0], models[1]) if len(models) > 1 else pd.DataFrame()
    summary.to_csv(out / "table.csv", index=False)
    pairs.to_csv(out / "pairs.csv", index=False)
    md = to_markdown(summary, pairs, models, ns)
    (out / "table.md").write_text(md)
    save_spread_plot(draws, out / "spread.png")
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.sample_size", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", nargs="+", default=["gan-weak", "gan-strong"],
                   help="shipped models (gan-weak, gan-strong, teacher-edm, ...) or real-test; the first two form the pair")
    p.add_argument("--n", nargs="+", type=int, default=[100, 5000], help="sample sizes")
    p.add_argument("--repeats", nargs="+", type=int, default=[100, 8], help="independent evaluations per n (one per --n)")
    p.add_argument("--results-dir", default="results")
    p.add_argument("--report", action="store_true",
                   help="only redraw the tables and plot from DIR/sample_size/draws.csv (no evaluation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--asset-dir", default=None, help="assets directory (default: shipped harness/assets)")
    p.add_argument("--data-root", default=None, help="FashionMNIST IDX files (for real-test)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.results_dir) / "sample_size"
    command = " ".join(["python -m harness.sample_size"] + (argv if argv is not None else sys.argv[1:]))
    if args.report:
        if not (out / "draws.csv").is_file() or not (out / "manifest.json").is_file():
            raise SystemExit(f"error: no {out / 'draws.csv'}; run `python -m harness.sample_size` first")
        previous = json.loads((out / "manifest.json").read_text())
        t0 = time.time()
        cfg = previous["config"]
        md = write_outputs(pd.read_csv(out / "draws.csv"), out, cfg["models"], cfg["n"])
        previous.update(report_command=command, report_git_commit=git_commit(), report_wall_s=round(time.time() - t0, 2))
        write_json(out / "manifest.json", previous)  # the run that made the draws stays the manifest's command
        print(md)
        return
    if len(args.repeats) != len(args.n):
        p.error(f"--repeats needs one count per --n ({len(args.n)} sizes, {len(args.repeats)} counts)")
    if min(args.repeats) < 2:
        p.error("--repeats: at least 2 evaluations per n (a spread needs two)")
    if min(args.n) < 10 or max(args.n) > 10_000:
        p.error("--n: between 10 and 10,000 (the test bank holds 10,000 images)")
    if args.threads:
        torch.set_num_threads(args.threads)
    git_commit()
    t0 = time.time()
    try:
        refs = scoring.references(args.asset_dir)
        draws = measure(args.models, args.n, args.repeats, refs, args.seed, args.asset_dir, args.data_root,
                        half_sample_n=max(args.n))
    except (assets.AssetNotFoundError, KeyError) as err:
        raise SystemExit(f"error: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    draws.to_csv(out / "draws.csv", index=False)
    md = write_outputs(draws, out, args.models, args.n)
    write_json(out / "manifest.json", make_manifest(command=command, config=vars(args), seed=args.seed,
                                                    wall_s=time.time() - t0))
    print(md)


if __name__ == "__main__":
    main()
