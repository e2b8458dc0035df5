"""Figures of results (matplotlib/seaborn, headless): metric bars and curves, diagnostics, before/after samples,
paired effects, class shares, importances. Sample images and the one figure writer are harness.common.figures."""

from __future__ import annotations

import textwrap
from pathlib import Path


from harness.common.figures import plt, save_figure


def save_metric_bars(table, path: Path, title: str = ""):
    """Point plot of every registered metric in every feature space (one row of panels per space), error bars
    from the ``<key>_lo`` / ``<key>_hi`` columns (95% intervals)."""
    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import METRICS, key

    spaces = [s for s in FEATURE_SPACES if key("kid", s) in table]
    metrics = list(METRICS)
    fig, axes = plt.subplots(len(spaces), len(metrics), figsize=(2.6 * len(metrics), 2.8 * len(spaces)), squeeze=False)
    for i, space in enumerate(spaces):
        for j, m in enumerate(metrics):
            ax, k = axes[i][j], key(m, space)
            err = [table[k] - table[f"{k}_lo"], table[f"{k}_hi"] - table[k]]
            ax.errorbar(table[k], range(len(table)), xerr=err, fmt="o", capsize=3)
            ax.set_yticks(range(len(table)), table["model"] if j == 0 else [""] * len(table), fontsize=7)
            ax.set_title(METRICS[m].header(space), fontsize=7)
            ax.invert_yaxis()
            ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path, dpi=120)


CURVE_X = {"kimg": "kimg (generator samples / 1000)", "round": "round",
           # Adam moves each weight by about lr per update, so lr x updates bounds how far the generator may travel:
           # runs at different generator lrs compare by that budget rather than by samples seen
           "lr_updates": "lr_gen x generator updates"}


def metric_curves(data, path, title: str, x: str | None = None) -> None:
    """Metric curves against ``x`` (a column of ``data``, one of CURVE_X; default kimg, or round when the rows have
    no kimg), one line per variant with a 95% confidence band over seeds (seaborn's bootstrap). ``data``: one row
    per (variant, seed, round) with flat metric keys. Images: one row of panels per feature space, one panel per
    verdict metric (registry order); the toy: its MMD² and in-mode fraction."""
    import seaborn as sns

    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import METRICS, key, verdict_metrics

    data = data.reset_index(drop=True)  # concatenated runs repeat row labels; seaborn needs them unique
    if "mmd2" in data.columns:
        grid = [[(k, label) for k, label in (("mmd2", "MMD² (toy)"), ("in_mode_fraction", "in-mode fraction"),
                                             ("mode_mass_tv", "mode-mass TV to the target")) if k in data.columns]]
    else:
        grid = [[(key(m, s), METRICS[m].header(s)) for m in verdict_metrics() if key(m, s) in data.columns]
                for s in FEATURE_SPACES]
        grid = [row for row in grid if row]
    if not grid:
        return
    ncols = max(len(r) for r in grid)
    fig, axes = plt.subplots(len(grid), ncols, figsize=(4.2 * ncols, 3.3 * len(grid)), squeeze=False)
    n = f", n={int(data['n'].iloc[0])}" if "n" in data.columns and data["n"].nunique() == 1 else ""
    # kimg, not rounds: runs at different batch sizes (and seed 000's epochs) compare by the samples the generator saw
    x = x or ("kimg" if "kimg" in data.columns else "round")
    for i, row in enumerate(grid):
        for j in range(ncols):
            ax = axes[i][j]
            if j >= len(row):
                ax.axis("off")
                continue
            col, label = row[j]
            last = i == 0 and j == len(row) - 1
            # seed=0: the bands are bootstraps; a fixed seed redraws an unchanged result byte for byte
            sns.lineplot(data=data, x=x, y=col, hue="variant", errorbar=("ci", 95), marker="o", ax=ax, legend=last, seed=0)
            ax.set_title(f"{label}{n}", fontsize=8)
            ax.set_ylabel("")
            ax.set_xlabel(CURVE_X[x], fontsize=7)
    if axes[0][len(grid[0]) - 1].get_legend() is not None:
        sns.move_legend(axes[0][len(grid[0]) - 1], "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle("\n".join(textwrap.wrap(title, 180)) + "\nEMA generator; line = mean over seeds, band = 95% bootstrap CI over seeds",
                 fontsize=9)
    save_figure(fig, path, dpi=110)


def thin_rounds(data, columns: list[str], points: int = 150):
    """Per-round rows averaged into at most ``points`` kimg bins per run (variant, seed): the curves keep their
    shape, and the bootstrap bands over seeds cost ``points`` rather than every round (minutes on a long toy run)."""
    runs = [c for c in ("variant", "seed") if c in data.columns]
    span = float(data["kimg"].max()) or 1.0
    width = span / points
    binned = data.assign(kimg=((data["kimg"] / width).round() * width))
    return binned.groupby(runs + ["kimg"], as_index=False)[columns].mean()


def diagnostics(rounds, path, title: str, evals=None) -> None:
    """Convergence diagnostics per variant (``rounds``: rows of rounds.csv with a ``variant`` column; ``evals``:
    rows of evals.csv, for the gradient signal when it was measured). Panels: the aux loss minus the teacher's
    own denoising loss on the same batch (the aux net fits the generator's samples better than the teacher does
    when < 0); the score gap E||s_q - s_p||^2 per sigma bin over the first and the last tenth of the rounds; the
    generator's gradient norm; the gradient signal (1: pure estimator noise; sqrt(K): every batch agrees)."""
    import seaborn as sns

    from harness.method.objectives.di import SIGMA_BIN_NAMES

    # callers concatenate runs' CSVs, so row labels repeat; seaborn needs them unique
    data = rounds.reset_index(drop=True)
    evals = evals.reset_index(drop=True) if evals is not None else None
    # an objective without a fake score logs no aux loss (its panel stays empty); nor, possibly, a grad norm
    data["aux - teacher loss"] = data["aux_loss"] - data["teacher_loss"] if "aux_loss" in data else float("nan")
    if "gen_grad_norm" not in data:
        data["gen_grad_norm"] = float("nan")
    last = data.groupby("variant")["round"].transform("max")
    data["phase"] = None
    data.loc[data["round"] <= 0.1 * last, "phase"] = "first 10%"
    data.loc[data["round"] > 0.9 * last, "phase"] = "last 10%"
    bins = [b for b in SIGMA_BIN_NAMES if b in data.columns]
    gap = data.dropna(subset=["phase"]).groupby(["variant", "phase"])[bins].mean().reset_index().melt(
        id_vars=["variant", "phase"], var_name="sigma bin", value_name="score gap")
    gap["sigma bin"] = gap["sigma bin"].str.replace("gap_s", "", regex=False)
    has_signal = evals is not None and "grad_signal" in getattr(evals, "columns", [])
    data = thin_rounds(data, ["aux - teacher loss", "gen_grad_norm"])
    fig, axes = plt.subplots(1, 4 if has_signal else 3, figsize=(19 if has_signal else 15, 3.8))
    sns.lineplot(data=data, x="kimg", y="aux - teacher loss", hue="variant", errorbar=("ci", 95), ax=axes[0], legend=False, seed=0)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set_title("aux loss - teacher loss, same batch (< 0: aux fits G better)", fontsize=8)
    sns.lineplot(data=gap, x="sigma bin", y="score gap", hue="variant", style="phase", marker="o", ax=axes[1], legend=False, seed=0)
    axes[1].set_yscale("log")
    axes[1].set_title("score gap E||s_q - s_p||^2 per sigma bin (solid: first 10% of rounds, dashed: last 10%)", fontsize=8)
    axes[1].tick_params(axis="x", labelrotation=30)
    sns.lineplot(data=data, x="kimg", y="gen_grad_norm", hue="variant", errorbar=("ci", 95), ax=axes[2], legend=not has_signal, seed=0)
    axes[2].set_yscale("log")
    axes[2].set_title("generator gradient norm (one batch)", fontsize=8)
    if has_signal:
        sns.lineplot(data=evals, x="kimg", y="grad_signal", hue="variant", errorbar=("ci", 95), marker="o", ax=axes[3], seed=0)
        axes[3].axhline(1, color="k", lw=0.6)
        axes[3].set_title("gradient signal: |mean of K batch gradients| / mean |one| x sqrt(K)", fontsize=8)
    legend_ax = axes[-1]
    if legend_ax.get_legend() is not None:
        sns.move_legend(legend_ax, "upper left", bbox_to_anchor=(1, 1), fontsize=7)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, dpi=120)


def before_after(rows: list[tuple[str, Path, Path]], references: list[tuple[str, Path]], path: Path, title: str) -> None:
    """One row per variant: its sample grid before DI and after, from the same latents (``rows``: label, start
    PNG, final PNG); a third column, when ``references`` are given, shows reference samples (teacher, strong GAN,
    real images), one per row."""
    n = max(len(rows), len(references))
    if not rows:
        return
    columns = 3 if references else 2
    fig, axes = plt.subplots(n, columns, figsize=(2.5 * columns, 2.6 * n), squeeze=False)
    for i in range(n):
        cells = [(rows[i][1], f"{rows[i][0]}\nbefore DI"), (rows[i][2], f"{rows[i][0]}\nafter DI")] if i < len(rows) else [None, None]
        cells.append((references[i][1], references[i][0]) if i < len(references) else None)
        for ax, cell in zip(axes[i], cells):
            ax.axis("off")
            if cell is not None and Path(cell[0]).is_file():
                ax.imshow(plt.imread(cell[0]))
                ax.set_title(cell[1], fontsize=7)
    right = "; right: reference samples" if references else ""
    fig.suptitle(f"{title}\nbefore and after: the same latents (seed of each row){right}", fontsize=9)
    # tight_layout alone lets the two-line title overlap the first row's panel titles; keep the top 0.5 inch for it
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    save_figure(fig, path, dpi=120, tight_layout=False)


def effect_panels(rows: list[dict], keys: list[str]) -> list[tuple[str, list[tuple[str, float, float, float]]]]:
    """What a paired-effects figure draws: per metric key with a paired change against the start (``d_<key>``, as
    harness.reporting.comparison.variant_rows writes it), a panel title that says which way is better, and one
    (label, mean, lo, hi) per row in the rows' order; a row without that change (no completed seed) gets NaN."""
    from harness.evaluation.scoring import METRICS, split_key

    nan = float("nan")
    panels = []
    for k in keys:
        if not any(f"d_{k}" in r for r in rows):
            continue  # not a verdict metric: no paired change was computed
        if k == "mmd2":
            title = "Δ MMD² (toy), lower is better"
        else:
            metric, space = split_key(k)
            better = "lower" if METRICS[metric].lower_is_better else "higher"
            title = f"Δ {METRICS[metric].label} ({space}), {better} is better"
        points = [(f"{r['variant']} ({r['n_seeds']} seeds)", r.get(f"d_{k}", nan), r.get(f"d_{k}_lo", nan),
                   r.get(f"d_{k}_hi", nan)) for r in rows]
        panels.append((title, points))
    return panels


def paired_effects(rows: list[dict], keys: list[str], path: Path, title: str, per_row: int = 5) -> None:
    """A forest plot of each row's paired change against its own starting generator (mean and 95% interval over
    seeds), one panel per verdict metric and feature space (``per_row`` panels a row: one feature space each),
    rows top to bottom in the given order: a ladder of settings reads as a dose-response at a glance."""

    import numpy as np

    panels = effect_panels(rows, keys)
    if not panels:
        return
    ncols = min(per_row, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols + 2.5, 0.32 * len(rows) * nrows + 1.2 * nrows + 0.8),
                             squeeze=False)
    y = np.arange(len(rows))[::-1]
    for i, ax in enumerate(axes.flat):
        if i >= len(panels):
            ax.axis("off")
            continue
        panel_title, points = panels[i]
        mean = np.array([m for _, m, _, _ in points], dtype=float)
        err = np.array([[m - lo, hi - m] for _, m, lo, hi in points], dtype=float).T
        ax.errorbar(mean, y, xerr=np.nan_to_num(err), fmt="o", ms=4, capsize=2, color="tab:blue")
        ax.axvline(0, color="grey", lw=0.7)
        ax.set_title(panel_title, fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.tick_params(axis="x", labelsize=7)
        if i % ncols == 0:
            ax.set_yticks(y, [label for label, _, _, _ in points], fontsize=7)
        else:
            ax.set_yticks(y, [])
    fig.suptitle("\n".join(textwrap.wrap(title, 140)) + "\nfinal - start, paired per seed (same latents); dot = mean, "
                 "bar = 95% t-interval over seeds", fontsize=9)
    save_figure(fig, path, dpi=120)


def class_shift(groups: list[tuple[str, list[dict]]], target: dict[str, list[float]], class_names: list[str],
                path: Path, title: str, models: dict[str, dict[str, list[float]]] | None = None) -> None:
    """Per feature space, how DI moves each class's share of the samples: bars are final - start share (mean over a
    group's seeds, 95% t-interval), one colour per group (``groups``: label, list of harness.class_balance
    histogram dicts); black diamonds are target - start (the move that would restore the test set's balance,
    the start averaged over every run). A bar with its diamond on the other side of 0 moves away from the data.
    ``models`` (label -> space -> shares, e.g. the teacher): hollow markers at model - start, the move towards
    that model's own class balance."""

    import numpy as np

    from harness.evaluation.verdicts import t_interval

    spaces = sorted({s for _, hs in groups for h in hs for s in h["final"]})
    if not spaces:
        return
    fig, axes = plt.subplots(len(spaces), 1, figsize=(12, 2.9 * len(spaces)), squeeze=False)
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(class_names))
    for ax, space in zip(axes[:, 0], spaces):
        for i, (label, hs) in enumerate(groups):
            deltas = [[h["final"][space][c] - h["start"][space][c] for h in hs] for c in range(len(class_names))]
            stats = [t_interval(d) for d in deltas]
            mean = np.array([m for m, _, _ in stats])
            err = np.array([[m - lo, hi - m] for m, lo, hi in stats]).T
            ax.bar(x - 0.4 + width * (i + 0.5), mean, width, yerr=np.nan_to_num(err), capsize=2,
                   label=f"{label} ({len(hs)} seeds)")
        starts = np.array([h["start"][space] for _, hs in groups for h in hs])
        ax.scatter(x, np.array(target[space]) - starts.mean(0), marker="D", color="black", s=18, zorder=3,
                   label="test share - start share")
        for (label, hists), marker in zip((models or {}).items(), "o^sv"):
            ax.scatter(x, np.array(hists[space]) - starts.mean(0), marker=marker, facecolors="none",
                       edgecolors="crimson", s=30, zorder=3, label=f"{label} share - start share")
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(x, class_names, fontsize=7)
        ax.set_ylabel(f"Δ class share\n({space} classifier)", fontsize=8)
        if space == spaces[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("\n".join(textwrap.wrap(title, 130)), fontsize=9)
    save_figure(fig, path, dpi=120)


def importance_bars(importances, path: Path, xlabel: str) -> None:
    """Horizontal bars of parameter importances (``importances``: a frame with ``param`` and ``importance``)."""
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(importances) + 1))
    ax.barh(importances.param[::-1], importances.importance[::-1])
    ax.set_xlabel(xlabel, fontsize=8)
    save_figure(fig, path, dpi=130, tight_layout=False)
