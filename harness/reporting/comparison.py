"""Comparison tables: variants against the starting generator and against a reference variant, every metric in
every feature space, with 95% intervals and the verdict rule of ``harness.evaluation.verdicts``.

Used by study tables (``harness.study.tables``) and run-directory reports (``harness.report``). Rows:
    baseline rows   measured by ``python -m harness.baselines`` (one evaluation each: half-sample intervals)
    start row       the generator before DI, one evaluation per seed (t-interval over seeds)
    variant rows    final EMA generator; mean and 95% t-interval over seeds (1 seed: its half-sample interval)
Every row states its n (samples scored); the header says when rows differ in n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from harness.common import markdown
from harness.evaluation.feature_spaces import FEATURE_SPACES
from harness.evaluation.scoring import METRICS, Evaluation, is_metric_key, key, split_key, verdict_metrics
from harness.evaluation.verdicts import Change, evidence, paired_changes, scalar_verdict, t_interval, verdict

TOY_METRICS = {"mmd2": "MMD² (RBF kernels, toy)", "in_mode_fraction": "in-mode fraction", "modes_covered": "modes covered",
               "mode_mass_tv": "mode-mass TV (to the target's weights)",
               "mode_mass_tv_floor": "mode-mass TV of as many target samples (its floor)",
               "min_mode_ratio": "smallest mode share / weight"}


@dataclass
class RunRecord:
    variant: str
    seed: int
    status: str
    start: Evaluation | None
    final: Evaluation | None
    wall_s: float | None = None
    run_dir: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "completed" and self.final is not None


def image_keys(records: list[RunRecord]) -> list[str]:
    """Metric keys present in the records, in registry order within each feature space."""
    present = {k for r in records for e in (r.start, r.final) if e for k in e.values if is_metric_key(k)}
    return [key(m, s) for s in FEATURE_SPACES for m in METRICS if key(m, s) in present]


def spaces_of(keys: list[str]) -> list[str]:
    return [s for s in FEATURE_SPACES if any(split_key(k)[1] == s for k in keys)]


def is_toy(records: list[RunRecord]) -> bool:
    return any(e is not None and "mmd2" in e.values for r in records for e in (r.start, r.final))


def metric_keys(records: list[RunRecord]) -> list[str]:
    """The keys a comparison of these records is made of: the toy's MMD², or every image metric present."""
    return ["mmd2"] if is_toy(records) else image_keys(records)


def _summarise(evals: list[Evaluation], k: str) -> tuple[float, float, float]:
    """Mean and 95% interval of one metric: t over seeds, or one evaluation's half-sample interval."""
    evals = [e for e in evals if e is not None and k in e.values]
    if len(evals) == 1:
        lo, hi = evals[0].interval(k)
        return evals[0].values[k], lo, hi
    return t_interval([e.values[k] for e in evals])


def _put(row: dict, prefix: str, changes: dict[str, Change]) -> None:
    for k, c in changes.items():
        row[f"{prefix}{k}"], row[f"{prefix}{k}_lo"], row[f"{prefix}{k}_hi"] = c.mean, c.lo, c.hi


def _values_row(row: dict, evals: list[Evaluation], keys: list[str]) -> dict:
    for k in keys:
        row[k], row[f"{k}_lo"], row[f"{k}_hi"] = _summarise(evals, k)
    ns = sorted({e.n for e in evals if e is not None})
    row["n"] = ns[0] if len(ns) == 1 else ",".join(map(str, ns))
    return row


def start_row(records: list[RunRecord], keys: list[str]) -> list[dict]:
    """One start evaluation per seed (every trial of a seed scores the same generator on the same latents)."""
    per_seed = {}
    for r in records:
        if r.start is not None:
            per_seed.setdefault(r.seed, r.start)
    if not per_seed:
        return []
    row = {"variant": "starting generator (before DI)", "kind": "start", "n_seeds": len(per_seed),
           "evidence": evidence(len(per_seed)), "source": "measured (round 0 of each seed)"}
    return [_values_row(row, list(per_seed.values()), keys)]


def variant_rows(records: list[RunRecord], keys: list[str], reference: str | None = None) -> list[dict]:
    toy = is_toy(records)
    spaces = spaces_of(keys) if not toy else []
    verdict_keys = [k for k in keys if not toy and split_key(k)[0] in verdict_metrics()]
    by_variant: dict[str, list[RunRecord]] = {}
    for r in records:
        by_variant.setdefault(r.variant, []).append(r)
    ref_by_seed = {r.seed: r for r in by_variant.get(reference, []) if r.done} if reference else {}
    rows = []
    for variant, group in by_variant.items():
        done = sorted([r for r in group if r.done], key=lambda r: r.seed)
        statuses = [r.status for r in group]
        row = {"variant": variant, "kind": "variant", "n_seeds": len(done), "evidence": evidence(len(done)),
               "n_pruned": statuses.count("pruned"), "n_failed": len(group) - len(done) - statuses.count("pruned"),
               "source": "measured (this study)"}
        walls = [r.wall_s for r in group if r.wall_s is not None]
        row["wall_s"] = sum(walls) / len(walls) if walls else float("nan")
        _values_row(row, [r.final for r in done], keys)
        if not done:
            row["verdict"] = "pruned (no final evaluation)" if row["n_pruned"] == len(group) else "no completed seed"
            row["verdict_vs_ref"] = "" if reference else None
            rows.append(row)
            continue
        if toy:
            deltas = [r.final.values["mmd2"] - r.start.values["mmd2"] for r in done if r.start is not None]
            row["d_mmd2"], row["d_mmd2_lo"], row["d_mmd2_hi"] = t_interval(deltas)
            row["verdict"] = scalar_verdict(deltas)
        else:
            changes = paired_changes([r.final for r in done], [r.start for r in done], verdict_keys)
            _put(row, "d_", changes)
            row["verdict"] = verdict(changes, spaces)
        if reference is not None:
            if variant == reference:
                row["verdict_vs_ref"] = "(reference variant)"
            else:
                # only seeds that both have can be paired: a variant with more seeds than its reference is compared
                # on fewer seeds than it has, and the vs-reference tables must say so
                pairs = [(r, ref_by_seed[r.seed]) for r in done if r.seed in ref_by_seed]
                row["n_pairs"], row["evidence_vs_ref"] = len(pairs), evidence(len(pairs))
                if toy:
                    deltas = [a.final.values["mmd2"] - b.final.values["mmd2"] for a, b in pairs]
                    row["r_mmd2"], row["r_mmd2_lo"], row["r_mmd2_hi"] = t_interval(deltas)
                    row["verdict_vs_ref"] = scalar_verdict(deltas) if pairs else "no paired seed"
                else:
                    changes = paired_changes([a.final for a, _ in pairs], [b.final for _, b in pairs], verdict_keys)
                    _put(row, "r_", changes)
                    row["verdict_vs_ref"] = verdict(changes, spaces) if pairs else "no paired seed"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Markdown


def fmt(value, lo=None, hi=None, spec: str = ".4g") -> str:
    """``value [lo, hi]`` (the 95% interval) or ``value``; empty for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if not isinstance(value, float):
        return str(value)
    cell = format(value, spec)
    if isinstance(lo, float) and isinstance(hi, float) and math.isfinite(lo) and math.isfinite(hi):
        cell += f" [{format(lo, spec)}, {format(hi, spec)}]"
    return cell


def _cell(r, col: str, spec: str) -> str:
    return fmt(r.get(col), r.get(f"{col}_lo"), r.get(f"{col}_hi"), spec)


def markdown_table(table: pd.DataFrame, cols: list[str]) -> str:
    """Markdown table of ``cols``; a cell shows its ``<col>_lo`` / ``<col>_hi`` interval when the frame has one."""
    return markdown.table(cols, [[_cell(r, c, ".4g") for c in cols] for _, r in table.iterrows()]) + "\n"


def n_note(table: pd.DataFrame, toy: bool = False) -> str:
    ns = sorted({str(v) for v in table.get("n", pd.Series(dtype=object)).dropna() if str(v)})  # "" = no evaluation (pruned)
    against = ("the exact target mixture (MMD²: the first 2,000 against 2,000 target draws)" if toy
               else "the 10,000 test images")
    if len(ns) == 1:
        return f"every row scored on n = {ns[0]} samples against {against}"
    return f"**rows differ in n ({', '.join(ns)}): compare only rows of the same n**"


def seeds_cell(n: int) -> str:
    """A seed count with what it supports, e.g. ``3 (screening)``."""
    return f"{int(n)} ({evidence(int(n))})"


def _pairs(r) -> str:
    """How many seeds a row is paired on against the reference variant ("" for the reference itself)."""
    n = r.get("n_pairs")
    return "" if n is None or pd.isna(n) else seeds_cell(n)


def to_markdown(table: pd.DataFrame, keys: list[str], reference: str | None = None) -> str:
    """Verdicts, paired changes per space, and metric values per space (fidelity | diversity | distance)."""
    if "mmd2" in keys:
        return _toy_markdown(table, reference)
    spaces = spaces_of(keys)
    variants = table[table.kind == "variant"]
    parts = []
    head = ["variant", "seeds", "verdict vs start"] + (["paired seeds vs reference", "verdict vs reference"] if reference else [])
    parts.append("## Verdicts\n\n" + markdown.table(head, [
        [str(r.variant), seeds_cell(r.n_seeds), str(r.get("verdict", "")),
         *([_pairs(r), str(r.get("verdict_vs_ref", "") or "")] if reference else [])] for _, r in variants.iterrows()]) + "\n")
    vkeys = [m for m in METRICS if METRICS[m].in_verdict]
    for prefix, against in (("d_", "the starting generator"), ("r_", f"`{reference}`")):
        if prefix == "r_" and not reference:
            continue
        for s in spaces:
            head = ["variant", "seeds" if prefix == "d_" else "paired seeds"] + [f"Δ {METRICS[m].header(s)}" for m in vkeys]
            rows = [[str(r.variant), str(int(r.n_seeds)) if prefix == "d_" else _pairs(r)]
                    + [_cell(r, f"{prefix}{key(m, s)}", METRICS[m].fmt) for m in vkeys] for _, r in variants.iterrows()]
            parts.append(f"## Paired change vs {against}, {s} features (mean [95% interval])\n\n" + markdown.table(head, rows) + "\n")
    order = [m for g in ("fidelity", "diversity", "distance") for m in METRICS if METRICS[m].group == g]
    for s in spaces:
        head = ["row", "n", "seeds"] + [f"{METRICS[m].header(s)} ({METRICS[m].group})" for m in order] + ["source"]
        rows = [[str(r.variant), str(r.get("n", "")), fmt(r.get("n_seeds"))] +
                [_cell(r, key(m, s), METRICS[m].fmt) for m in order] + [str(r.get("source", ""))]
                for _, r in table.iterrows()]
        parts.append(f"## Metrics in {s} features (mean [95% interval])\n\n" + markdown.table(head, rows) + "\n")
    return "\n".join(parts)


def _toy_markdown(table: pd.DataFrame, reference: str | None) -> str:
    present = [m for m in TOY_METRICS if m in table and table[m].notna().any()]  # runs from before a metric existed lack it
    head = ["row", "seeds"] + [TOY_METRICS[m] for m in present] + ["Δ MMD² vs start", "verdict"] + (["paired seeds vs reference", "verdict vs reference"] if reference else [])
    rows = []
    for _, r in table.iterrows():
        rows.append([str(r.variant), fmt(r.get("n_seeds"))] + [_cell(r, m, ".4g") for m in present]
                    + [_cell(r, "d_mmd2", ".4g"), "" if r.get("kind") == "start" else str(r.get("verdict", "") or "")]
                    + (["" if r.get("kind") == "start" else _pairs(r),
                        "" if r.get("kind") == "start" else str(r.get("verdict_vs_ref", "") or "")] if reference else []))
    return "## Exact-score toy (MMD² in its own units)\n\n" + markdown.table(head, rows) + "\n"


TOY_NOTE = ("Intervals are 95% Student-t over seeds (per-seed values, or per-seed paired changes). The toy's "
            "verdict reads its MMD² alone: improved / degraded when the interval of the change excludes 0. Its "
            "in-mode fraction and modes covered show whether mass sits on the target's modes.")
INTERVALS_NOTE = ("Intervals are 95%: over seeds, Student-t on the per-seed values (or per-seed paired differences); "
                  "for a single evaluation (a baseline row, a 1-seed row), a normal interval from the spread over 20 "
                  "half-samples of the scored samples (half-sampling estimates the variance at the full n; pairs "
                  "scored on the same latents are compared half-sample by half-sample). A change counts when its "
                  "interval excludes 0. Verdict per feature space: improved = at least one of KID, FID, precision, "
                  "recall, class TV significantly better and none worse; degraded (named metrics) = some worse, none "
                  "better; mixed = both. Across spaces, metric by metric: a change is real only when significant the same way in "
                  "every feature space; changes in some spaces only are named, and with nothing else they give "
                  "`feature-space dependent` (each space's verdict shown). Seeds: >= 5 support a "
                  "claim, 2-4 are screening, 1 seed judges evaluation noise only. KID and FID are raw values in each "
                  "classifier's feature space (not Inception; not comparable across spaces or with published numbers).")
