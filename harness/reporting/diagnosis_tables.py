"""The diagnosis report's tables: each hypothesis's rows of paired changes, at the final evaluations or at curve
points (equal kimg or equal lr x generator updates), and the hypotheses table."""

from __future__ import annotations

import re
from typing import Callable
from pathlib import Path

import pandas as pd

from harness.common import markdown
from harness.reporting.comparison import TOY_METRICS, RunRecord, fmt, metric_keys, seeds_cell, spaces_of, variant_rows
from harness.common.run_dir import RunDir
from harness.evaluation.scoring import METRICS, Evaluation, is_metric_key, key, verdict_metrics
from harness.reporting.diagnosis_spec import Hypothesis, ReportSpecError
from harness.method.config import DIConfig

DOC_INDEX_ROW = re.compile(r"^\| \[[^\]]+\]\(#([a-z0-9-]+)\) \|", re.M)  # a row of the doc's index table


def study_records(results_dir: Path, study: str) -> list[RunRecord]:
    """The trials of results/<study>/study.db as run records (the one Optuna study that storage holds)."""
    import optuna

    from harness.study.tables import resolve_run_dir, run_records

    db = Path(results_dir) / study / "study.db"
    if not db.is_file():
        raise ReportSpecError(f"no study storage {db}: run the study first (python -m harness.study ...)")
    url = f"sqlite:///{db}"
    summaries = optuna.get_all_study_summaries(url)
    if len(summaries) != 1:
        raise ReportSpecError(f"{db} holds {len(summaries)} studies; expected one")
    records = run_records(optuna.load_study(study_name=summaries[0].study_name, storage=url))
    for r in records:
        r.run_dir = resolve_run_dir(r.run_dir, db.parent)
    return records


def curve_point(evals: pd.DataFrame, column: str, value: float) -> Evaluation | None:
    """The curve evaluation (a row of evals.csv) where ``column`` equals ``value`` to float precision: values only,
    no half-samples. None when the run has no point there."""
    at = evals[(evals[column] - value).abs() < 1e-9]
    if at.empty:
        return None
    row = at.iloc[-1]
    return Evaluation(n=int(row["n"]), values={k: float(row[k]) for k in evals.columns
                                               if is_metric_key(k) or k in TOY_METRICS})


def curve_points(run_dir: Path, at: str, value: float,
                 since: float | None = None) -> tuple[Evaluation | None, Evaluation | None]:
    """A run's round-0 curve point (or its point where ``at`` equals ``since``) and its point where ``at``
    (``kimg``, or ``lr_updates``: lr_gen x generator updates) equals ``value``. Every curve point of a seed scores
    the same first eval_n latents, so two points of one run, or two runs of one seed, stay paired."""
    path = RunDir(run_dir).evals
    if not path.is_file():
        return None, None
    evals = pd.read_csv(path)
    if at == "lr_updates":
        evals["lr_updates"] = lr_updates(evals["round"], Path(run_dir))
    start = curve_point(evals, "round", 0) if since is None else curve_point(evals, at, since)
    return start, curve_point(evals, at, value)


def at_kimg(records: list[RunRecord], kimg: float) -> list[RunRecord]:
    """The records with their curve points at round 0 and at ``kimg`` as start and final. A run without a point at
    ``kimg`` counts as not completed."""
    out = []
    for r in records:
        start, final = curve_points(Path(str(r.run_dir or "")), "kimg", kimg) if r.done else (None, None)
        status = r.status if not r.done else "completed" if final is not None else f"no curve point at {kimg:g} kimg"
        out.append(RunRecord(variant=r.variant, seed=r.seed, status=status, start=start, final=final,
                             wall_s=r.wall_s, run_dir=r.run_dir))
    return out


def hypothesis_rows(h: Hypothesis, records: list[RunRecord]) -> tuple[list[dict], list[str]]:
    if h.at_kimg is not None:
        records = at_kimg(records, h.at_kimg)
    keys = metric_keys(records)
    if h.reference not in {r.variant for r in records}:
        raise ReportSpecError(f"hypothesis {h.name}: no variant {h.reference!r} in study {h.study} "
                              f"(variants: {', '.join(sorted({r.variant for r in records}))})")
    rows = [r for r in variant_rows(records, keys, h.reference) if r["variant"] != h.reference]
    if h.variants:
        rows = [r for r in rows if r["variant"] in h.variants]
    for r in rows:
        r.update(hypothesis=h.name, study=h.study, reference=h.reference)
        if h.at_kimg is not None:
            r["at_kimg"] = h.at_kimg
    return rows, keys


def change_table(rows: list[dict], keys: list[str], lead: list[tuple[str, Callable[[dict], str]]], prefix: str,
                 verdict_col: str, verdict_head: str) -> str:
    """Paired changes (``prefix``: ``r_`` vs a reference variant, ``d_`` vs the starting generator) in every verdict
    metric and feature space, one row each; ``lead``: (header, cell of a row) columns shown first."""
    toy_only = "mmd2" in keys  # a toy study: its distance is MMD², it has no feature spaces
    spaces = [] if toy_only else spaces_of(keys)
    ks = ["mmd2"] if toy_only else [key(m, s) for s in spaces for m in verdict_metrics() if key(m, s) in keys]
    cols = ["Δ MMD² (toy)"] if toy_only else [f"Δ {METRICS[k.rpartition('_')[0]].header(k.rpartition('_')[2])}" for k in ks]
    lines = []
    for r in rows:
        # against a reference only the seeds both have are paired: that count, not the variant's own, goes here
        n = int(r["n_pairs"]) if prefix == "r_" else int(r["n_seeds"])
        cells = [cell(r) for _, cell in lead] + [seeds_cell(n)]
        for k in ks:
            spec = ".4g" if toy_only else METRICS[k.rpartition("_")[0]].fmt
            cells.append(fmt(r.get(f"{prefix}{k}"), r.get(f"{prefix}{k}_lo"), r.get(f"{prefix}{k}_hi"), spec))
        cells.append(str(r.get(verdict_col, "")))
        lines.append(cells)
    return markdown.table([h for h, _ in lead] + ["paired seeds" if prefix == "r_" else "seeds"] + cols + [verdict_head], lines)


def hypotheses_table(rows: list[dict], keys: list[str]) -> str:
    at_kimg = any("at_kimg" in r for r in rows)  # rows read at a curve point say where
    lead = [("hypothesis", lambda r: f"[{r['hypothesis']}](../docs/hypotheses.md#{r['hypothesis']})"),
            # the same change can be tried in several studies (e.g. with each teacher): the study tells them apart
            ("study", lambda r: f"[{r['study']}]({r['study']}/table.md)"),
            *([("at kimg", lambda r: f"{r['at_kimg']:g}")] if at_kimg else []),
            ("change (vs its reference)", lambda r: f"`{r['variant']}` vs `{r['reference']}`")]
    return change_table(rows, keys, lead, "r_", "verdict_vs_ref", "verdict vs the reference")


def documented_hypotheses(doc_text: str) -> list[str]:
    """The hypotheses docs/hypotheses.md indexes (its table's first-column anchors), in the doc's order."""
    return DOC_INDEX_ROW.findall(doc_text)


def rowless_note(documented: list[str], rows: list[dict]) -> str:
    """Which documented hypotheses have no row in the hypotheses tables, said under them: a cause left untested
    by a one-change ablation must show, not vanish from the report."""
    with_rows = {r["hypothesis"] for r in rows}
    missing = [h for h in documented if h not in with_rows]
    if not missing:
        return f"Every hypothesis indexed in docs/hypotheses.md ({len(documented)}) has a row here.\n"
    return (f"Indexed in docs/hypotheses.md but without a row here ({len(missing)} of {len(documented)}): "
            + ", ".join(f"[{h}](../docs/hypotheses.md#{h})" for h in missing)
            + ". No one-change ablation measured them; where the report speaks to them, it is through the controls "
              "or a measurement of its own.\n")


def run_dirs(results_dir: Path, patterns: list[str]) -> list[Path]:
    """Finished run directories matching the glob patterns (relative to the results directory), sorted."""
    found = sorted({p for pat in patterns for p in Path(results_dir).glob(pat) if RunDir(p).summary.is_file()})
    if not found:
        raise ReportSpecError(f"no finished run directory matches {', '.join(patterns)} under {results_dir}")
    return found


def lr_updates(rounds: pd.Series, run_dir: Path) -> pd.Series:
    """lr_gen x the generator updates made by each round (gen_steps per round; the generator lr is constant)."""
    cfg = DIConfig.load(RunDir(run_dir).config)
    return rounds * cfg.gen_steps * cfg.lr_gen
