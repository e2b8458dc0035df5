"""A study's table as a person reads it in a terminal.

``compact_table`` fits a 100-column terminal: one line per variant with its seeds, the paired change of each verdict
metric against the starting generator (in the primary feature space, the objective's space), one mark per feature
space for what that change means, and a short verdict; then the verdicts against the reference variant and the
paths of the full tables. A variant name is never cut: one too long for its column gets a line of its own.
``wide_table`` is the full table (values with their 95% intervals, full verdicts), 200 columns wide.
"""

from __future__ import annotations

import math
import re
import textwrap

import pandas as pd

WIDTH = 100
MARKS = {"better": "+", "worse": "-", "none": "."}  # per feature space: the change is significant and better / worse
SHORT_VERDICTS = {"no significant change": "no sig. change", "improved": "improved", "degraded": "degraded",
                  "mixed": "mixed"}
VERDICT_MARKS = {"improved": "+", "degraded": "-", "mixed": "±", "no significant change": "="}
SPACE_VERDICT = re.compile(r"(\w+): (improved|degraded|mixed|no significant change)")


def short_verdict(verdict) -> str:
    """The verdict's leading words, without the metrics and notes in parentheses or brackets; a feature-space
    dependent one as each space's mark (``vgg+ resnet±``: improved, degraded -, mixed ±, no significant change =)."""
    if not isinstance(verdict, str) or not verdict:
        return ""
    if verdict.startswith("feature-space dependent"):
        return " ".join(f"{space}{VERDICT_MARKS[word]}" for space, word in SPACE_VERDICT.findall(verdict))
    head = verdict.split(" (")[0].split(" [")[0].strip()
    return SHORT_VERDICTS.get(head, head)


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def space_mark(row, key: str, lower_is_better: bool) -> str:
    """``+`` / ``-``: the 95% interval of the paired change excludes 0 on the better / worse side; ``.``: it does
    not (or there is no interval)."""
    lo, hi = _number(row.get(f"d_{key}_lo")), _number(row.get(f"d_{key}_hi"))
    if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
        return MARKS["none"]
    went_down = hi < 0
    return MARKS["better"] if went_down == lower_is_better else MARKS["worse"]


def _change_columns(table: pd.DataFrame) -> list[tuple[str, list[str], bool]]:
    """(header, flat keys by space (the primary first), lower is better) per metric with a paired change."""
    from harness.evaluation.feature_spaces import FEATURE_SPACES, PRIMARY_SPACE
    from harness.evaluation.scoring import METRICS, key, verdict_metrics

    if "d_mmd2" in table:  # the toy: its own metrics, no feature spaces
        return [(k, [k], True) for k in ("mmd2", "mode_mass_tv") if f"d_{k}" in table]
    spaces = [PRIMARY_SPACE] + [s for s in FEATURE_SPACES if s != PRIMARY_SPACE]
    cols = []
    for m in verdict_metrics():
        keys = [key(m, s) for s in spaces if f"d_{key(m, s)}" in table]
        if keys:
            cols.append((METRICS[m].label, keys, METRICS[m].lower_is_better))
    return cols


def compact_table(table: pd.DataFrame, title: str, paths: list[str] = ()) -> str:
    """The compact table as text, every line at most ``WIDTH`` columns."""
    from harness.evaluation.feature_spaces import FEATURE_SPACES, PRIMARY_SPACE

    rows = table[table["kind"] == "variant"] if "kind" in table else table
    cols = _change_columns(table)
    n_spaces = max((len(keys) for _, keys, _ in cols), default=1)
    cell_w = 10 + n_spaces  # "+0.000467" (9), a space and one mark per space
    verdict_w = 14
    name_w = max(12, WIDTH - 6 - len(cols) * (cell_w + 1) - verdict_w - 1)
    header = f"{'variant':<{name_w}} {'seeds':>5}" + "".join(f" {h[:cell_w]:>{cell_w}}" for h, _, _ in cols) \
        + f" {'verdict':<{verdict_w}}"
    spaces = [PRIMARY_SPACE] + [s for s in FEATURE_SPACES if s != PRIMARY_SPACE] if "d_mmd2" not in table else []
    legend = (f"change vs the starting generator, mean over seeds, in {PRIMARY_SPACE} features; marks per space "
              f"({', '.join(spaces[:n_spaces])}): + better, - worse (95% interval excludes 0), . no significant "
              f"change. A verdict that depends on the space gives each space's: + improved, - degraded, ± mixed, = no "
              f"significant change" if spaces else "change vs the starting generator, mean over seeds; mark: + better, "
                                                   "- worse (95% interval excludes 0), . no significant change")
    lines = textwrap.wrap(title, WIDTH) + textwrap.wrap(legend, WIDTH) + ["", header, "-" * len(header)]
    for _, r in rows.iterrows():
        cells = []
        for _, keys, lower in cols:
            mean = _number(r.get(f"d_{keys[0]}"))
            marks = "".join(space_mark(r, k, lower) for k in keys)
            value = "" if math.isnan(mean) else format(mean, "+.3g")
            cells.append(f" {value:>9} {marks}" if marks else f" {value:>{cell_w}}")
        seeds = "" if pd.isna(r.get("n_seeds")) else str(int(r["n_seeds"]))
        numbers = f" {seeds:>5}" + "".join(cells) + f" {short_verdict(r.get('verdict'))[:verdict_w]:<{verdict_w}}"
        name = str(r["variant"])
        if len(name) > name_w:  # never cut a name: it gets its own line
            lines += [name, f"{'':<{name_w}}{numbers}".rstrip()]
        else:
            lines.append(f"{name:<{name_w}}{numbers}".rstrip())
    refs = [(str(r["variant"]), r.get("verdict_vs_ref")) for _, r in rows.iterrows()
            if isinstance(r.get("verdict_vs_ref"), str) and not r["verdict_vs_ref"].startswith("(reference")]
    reference = next((str(r["variant"]) for _, r in rows.iterrows()
                      if isinstance(r.get("verdict_vs_ref"), str) and r["verdict_vs_ref"].startswith("(reference")), None)
    if refs:
        lines += ["", f"vs the reference variant {reference}, paired per seed:" if reference else "vs the reference:"]
        for name, v in refs:  # the full verdict, wrapped: it names the metrics
            lines += textwrap.wrap(f"{name}: {v}", WIDTH, initial_indent="  ", subsequent_indent="      ")
    if paths:
        lines += ["", "full tables (values with 95% intervals, every metric and space, full verdicts):"]
        lines += [f"  {p}" for p in paths]
    return "\n".join(lines)


def wide_table(table: pd.DataFrame, title: str) -> None:
    """The full table on a 200-column console (values with their intervals, full verdicts)."""
    from rich.console import Console
    from rich.table import Table

    from harness.evaluation.feature_spaces import PRIMARY_SPACE
    from harness.reporting.comparison import fmt

    t = Table(title=title)
    cols = [("row", "variant", None), ("seeds", "n_seeds", None), ("n", "n", None)]
    if "mmd2" in table:
        cols += [("MMD²", "mmd2", ".4g")]
    else:
        cols += [(f"{m} ({PRIMARY_SPACE})", f"{m}_{PRIMARY_SPACE}", ".3f" if m in ("precision", "recall", "class_tv") else ".4g")
                 for m in ("fid", "kid", "precision", "recall", "class_tv")]
    cols += [("verdict vs start", "verdict", None), ("paired seeds vs reference", "n_pairs", None),
             ("verdict vs reference", "verdict_vs_ref", None)]
    cols = [c for c in cols if c[1] in table]
    for name, _, _ in cols:
        t.add_column(name)
    for _, r in table.iterrows():
        t.add_row(*[fmt(r.get(c), r.get(f"{c}_lo"), r.get(f"{c}_hi"), spec) if spec else fmt(r.get(c)) for _, c, spec in cols])
    Console(width=200).print(t)
