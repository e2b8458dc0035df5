"""The diagnosis report's figures: curves, samples, diagnostics, class shares and effects, from a spec entry."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.reporting.comparison import metric_keys, variant_rows
from harness.common.run_dir import EVALS, ROUNDS, RunDir
from harness.reporting.diagnosis_spec import FIGURE_KINDS, ReportSpecError
from harness.reporting.diagnosis_tables import lr_updates, run_dirs



def figure(fig: dict, results_dir: Path, out_dir: Path, index: int, records_of) -> str:
    """Draw one figure into out_dir and return its markdown."""
    from harness.reporting.plots import before_after, diagnostics, metric_curves

    if "runs" in fig:  # run directories (harness.run), grouped into variants as harness.report groups them
        from harness.reporting.run_comparison import load_run, run_record, varying_fields

        runs = [load_run(d) for d in run_dirs(results_dir, fig["runs"])]
        varying = varying_fields([r["config"] for r in runs])
        records = []
        for r in runs:
            rec = run_record(r, varying)
            rec.run_dir = r["dir"]
            records.append(rec)
        source = fig.get("name", "runs")
    else:
        records = [r for r in records_of(fig["study"]) if r.done and (not fig.get("variants") or r.variant in fig["variants"])]
        if fig.get("variants"):  # the spec's order, which the caption's seed counts follow too
            records.sort(key=lambda r: fig["variants"].index(r.variant))
        source = fig.get("name", fig["study"])
    name = f"fig{index}-{fig['kind']}-{source}.png"
    path = out_dir / name
    frames = {EVALS: [], ROUNDS: []}
    drawn = []  # the records a curves or diagnostics figure draws: those with logs
    for r in records:
        logs = [(acc, Path(str(r.run_dir or "")) / f) for f, acc in frames.items()]
        logs = [(acc, p) for acc, p in logs if p.is_file()]
        for acc, p in logs:
            df = pd.read_csv(p)
            df["variant"], df["seed"] = r.variant, r.seed
            if fig.get("x") == "lr_updates":
                df["lr_updates"] = lr_updates(df["round"], Path(str(r.run_dir)))
            acc.append(df)
        if logs:
            drawn.append(r)
    if fig["kind"] == "curves" and frames[EVALS]:
        metric_curves(pd.concat(frames[EVALS]), path, fig.get("caption", source), fig.get("x"))
    elif fig["kind"] == "diagnostics" and frames[ROUNDS]:
        diagnostics(pd.concat(frames[ROUNDS]), path, fig.get("caption", source),
                    pd.concat(frames[EVALS]) if frames[EVALS] else None)
    elif fig["kind"] == "samples":  # each variant's lowest seed: its first and last grid (the same latents)
        rows, shown = [], set()
        for r in sorted(records, key=lambda r: (r.variant, r.seed)):
            grids = RunDir(str(r.run_dir or "")).grid_files()
            if len(grids) >= 2 and r.variant not in shown:
                shown.add(r.variant)
                rows.append((f"{r.variant} (seed {r.seed})", grids[0], grids[-1]))
        before_after(rows, [], path, fig.get("caption", source))
    elif fig["kind"] == "classes":
        from harness.evaluation.class_balance import ClassHistError, class_hists, load_model_hists, reference_class_shares
        from harness.testbed.data import CLASSES
        from harness.reporting.plots import class_shift

        groups: dict[str, list[dict]] = {}
        for r in sorted(records, key=lambda r: (r.variant, r.seed)):
            try:
                groups.setdefault(r.variant, []).append(class_hists(Path(str(r.run_dir))))
            except ClassHistError as err:
                raise ReportSpecError(str(err)) from None
        stored = load_model_hists(results_dir)
        missing = [m for m in fig.get("models", []) if m not in stored]
        if missing:
            raise ReportSpecError(f"figure {index}: no class histograms of {', '.join(missing)}; run "
                                  f"`python -m harness.class_balance --models {' '.join(missing)}`")
        models = {f"{m} (n = {stored[m]['n']})": stored[m]["class_hists"] for m in fig.get("models", [])}
        if groups:
            class_shift(list(groups.items()), reference_class_shares(), list(CLASSES), path, fig.get("caption", source),
                        models)
    elif fig["kind"] == "effects":  # the rows in the spec's order: a ladder reads top to bottom
        from harness.reporting.plots import paired_effects

        keys = metric_keys(records)
        by_variant = {r["variant"]: r for r in variant_rows(records, keys)}
        order = fig.get("variants") or list(by_variant)
        paired_effects([by_variant[v] for v in order if v in by_variant], keys, path, fig.get("caption", source))
    else:
        raise ReportSpecError(f"figure kind must be one of {', '.join(FIGURE_KINDS)}, got {fig['kind']!r}")
    if not path.is_file():
        return f"*(figure {index}: no run data found for {source})*\n"
    caption = fig.get("caption", "")
    if fig["kind"] != "samples":  # a samples figure labels the one seed it shows
        seeds = seeds_per_variant(drawn if fig["kind"] in ("curves", "diagnostics") else records)
        caption = f"{caption.rstrip('.')}. {seeds}" if caption else seeds
    return f"![{fig.get('caption', '')}]({out_dir.name}/{name})\n\n*Figure {index}.* {caption}\n"


def seeds_per_variant(records) -> str:
    """The seeds each variant of a figure has, counted from what was drawn: a count written into a caption by hand
    goes stale as soon as a study grows."""
    seeds: dict[str, set] = {}
    for r in records:
        seeds.setdefault(r.variant, set()).add(r.seed)
    return "Seeds: " + ", ".join(f"{v} {len(s)}" for v, s in seeds.items()) + "."
