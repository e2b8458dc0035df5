"""results/REPORT.md: the diagnosis, generated from the study storages and run directories by one command.

    python -m harness.diagnosis [--spec studies/diagnosis/report.toml] [--results-dir results] [--out results/REPORT.md]

The spec (TOML) names what the report is made of; every number in the report is read from the results:

* ``title``, ``question``, ``setup`` (prose: what is faithful to the reference loop, what differs from seed 000);
  a table of the shipped assets (from their manifest) follows the setup.
* ``[[hypothesis]]``: ``name`` (an anchor of docs/hypotheses.md), ``study`` (a study directory under the results
  directory: ``results/<study>/study.db``), ``reference`` (the variant every other is compared with, paired per
  seed: the failing configuration) and optionally ``variants`` (default: all others). One row per variant: its
  paired change against the reference in every verdict metric and feature space, with 95% intervals, n_seeds,
  evidence and verdict (harness.evaluation.verdicts). With ``at_kimg`` (e.g. 25.6) the rows compare the curve points at that
  many kimg of generator samples (evals.csv, n = eval_n) instead of the final evaluations, in a table of their own:
  two round strategies compared at equal generator updates rather than at equal rounds. Their placeholders name
  the study as ``study@25.6kimg``. Under the table, every hypothesis docs/hypotheses.md indexes without a row is
  named, so a cause left untested shows.
* ``[[reproduction]]``: ``name`` (for the answer's placeholders), ``title``, ``runs`` (glob patterns of run directories under the results directory, e.g.
  ``di/runs/reference-gan-seed*``), optional ``note``: the failing configuration reproduced, one row per group of
  runs: its paired change against the starting generator (same seed, same latents) with 95% intervals, n_seeds,
  evidence and verdict.
* ``[[control]]``: as ``[[reproduction]]`` (``name``, ``title``, ``runs``, ``note``), for runs that test the
  answer rather than reproduce the failure (e.g. the exact-score toy); a toy group also shows its final mode-mass
  TV against the sampling floor and its in-mode fraction. Its rows fill placeholders too. Either section takes an
  optional ``at_lr_updates`` (e.g. 0.006): each run is read at its curve point where lr_gen x generator updates
  equals it, against its round-0 point (n = eval_n), so runs at different generator lrs compare at one step budget;
  with ``from_lr_updates`` as well (smaller), against its point at that budget instead of round 0: what a run still
  changes late in training (does a drift level off?), paired per seed on the same latents.
* ``[[figure]]``: ``kind`` = ``curves`` | ``samples`` | ``diagnostics`` | ``classes`` (each class's share of the
  samples before and after, harness.class_balance; optional ``models``: shipped models whose class balance is
  drawn beside, from ``results/class_balance/``) | ``effects`` (a forest plot of each variant's paired change against
  its start, every verdict metric and feature space, variants top to bottom in the order ``variants`` lists them:
  a ladder of settings reads as a dose-response), then either ``study`` (and optionally
  ``variants``) or ``runs`` (glob patterns of run directories, as above), ``caption``, and optionally ``name`` (the
  figure file's suffix; default the study's name, or "runs"). A ``curves`` figure takes an optional ``x``: ``kimg``
  (the default) or ``lr_updates`` (lr_gen x generator updates, from each run's config: runs at different
  generator lrs side by side by how far their optimiser may have moved the generator).
* ``answer``: the answer, one paragraph. ``{study|variant|column}`` placeholders are filled from the table rows
  (e.g. ``{lr_ladder|lr=3e-4|r_fid_vgg}`` gives the mean and 95% interval of that change), so the prose carries
  measured numbers only. A variant listed under two hypotheses with different references is written
  ``{study|variant vs reference|column}``.
* ``evidence`` (optional): the argument behind the answer, point by point, with the same placeholders; it follows
  the answer under "What the evidence says".

Seed 000's Table 1 appears only in its own section, labelled as theirs.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import pandas as pd

from harness.common import markdown
from harness.reporting.comparison import RunRecord, fmt, n_note
from harness.common.manifest import git_commit, make_manifest, write_json
from harness.reporting.diagnosis_figures import figure
from harness.reporting.diagnosis_spec import ReportSpecError, load_spec
from harness.reporting.diagnosis_tables import change_table, curve_points, documented_hypotheses, hypotheses_table, hypothesis_rows, rowless_note, run_dirs, study_records

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "studies" / "diagnosis" / "report.toml"
HYPOTHESES_DOC = Path(__file__).resolve().parents[2] / "docs" / "hypotheses.md"
PLACEHOLDER = re.compile(r"\{([^{}|]+)\|([^{}|]+)\|([^{}|]+)\}")

def reproduction_section(rep: dict, results_dir: Path) -> tuple[str, list[dict]]:
    """A group of run directories against the starting generator: is the failing configuration failing? Returns
    the section and its rows (named ``rep['name']`` for the answer's placeholders)."""
    from harness.reporting.run_comparison import aggregate, load_run

    dirs = run_dirs(results_dir, rep["runs"])
    runs = [load_run(d) for d in dirs]
    if "at_lr_updates" in rep:
        runs = [at_lr_updates(r, rep["at_lr_updates"], rep.get("from_lr_updates")) for r in runs]
    table, keys = aggregate(runs)
    rows = [r for r in table.to_dict("records") if r.get("kind") == "variant"]
    for r in rows:
        r["study"] = rep["name"]
    lead = [("configuration", lambda r: r["variant"])]
    if "mmd2" in keys:  # the toy: whether the modes keep their masses, and how much of the mass sits in a mode
        lead += [(head, lambda r, c=col: fmt(r.get(c), r.get(f"{c}_lo"), r.get(f"{c}_hi"), ".3g"))
                 for head, col in (("final mode-mass TV", "mode_mass_tv"), ("its sampling floor", "mode_mass_tv_floor"),
                                   ("final in-mode fraction", "in_mode_fraction"))]
    since = rep.get("from_lr_updates")
    md = change_table(rows, keys, lead, "d_", "verdict", "verdict vs the starting generator" if since is None
                      else f"verdict vs its own point at lr_gen x updates = {since:g}")
    return (f"### {rep['title']}\n\n{rep.get('note', '').strip()} Start and final: {n_note(table, 'mmd2' in keys)}."
            f"\n\n{md}\n\nRun directories: "
            + ", ".join(f"`{d.relative_to(results_dir)}`" for d in dirs)
            + " (each summary.json's manifest names the command that trained it)\n"), rows


def placeholder_study(row: dict) -> str:
    """How a placeholder names a row's study: ``study``, or ``study@25.6kimg`` for a row read at a curve point."""
    kimg = row.get("at_kimg")
    return row["study"] if kimg is None else f"{row['study']}@{kimg:g}kimg"


def at_lr_updates(run: dict, budget: float, since: float | None = None) -> dict:
    """A loaded run (harness.reporting.run_comparison.load_run) with its curve points at round 0 (or where lr_gen x generator updates
    reaches ``since``) and where it reaches ``budget`` as its start and final: runs at different generator lrs read
    at the same step budget. A run without a curve point at either counts as not completed."""
    start, final = curve_points(Path(run["dir"]), "lr_updates", budget, since)
    done = run["summary"].get("status") == "completed" and start is not None and final is not None
    missing = budget if final is None or since is None else since
    summary = {**run["summary"], "start": start.to_dict() if start else None, "final": final.to_dict() if final else None,
               "status": "completed" if done else f"no curve point at lr_gen x updates = {missing:g}"}
    return {**run, "summary": summary}


def fill(template: str, rows: list[dict]) -> str:
    """Replace ``{study|variant|column}`` with the measured value (and its interval when the column has one);
    ``study`` is a hypothesis's study or a reproduction's name. A variant that the table compares with more than one
    reference (e.g. a dose against the failing configuration and against the previous dose) is written
    ``variant vs reference``; the short form would be ambiguous and is refused."""
    index: dict[tuple[str, str], dict] = {}
    ambiguous: set[tuple[str, str]] = set()
    for r in rows:
        study = placeholder_study(r)
        short = (study, r["variant"])
        if short in index and index[short].get("reference") != r.get("reference"):
            ambiguous.add(short)
        index[short] = r
        if "reference" in r:
            index[(study, f"{r['variant']} vs {r['reference']}")] = r

    def value(m: re.Match) -> str:
        study, variant, col = (g.strip() for g in m.groups())
        if (study, variant) in ambiguous:
            raise ReportSpecError(f"answer placeholder {m.group(0)}: {variant} has several references in the "
                                  f"hypotheses table; write '{variant} vs REFERENCE'")
        row = index.get((study, variant))
        if row is None or col not in row:
            raise ReportSpecError(f"answer placeholder {m.group(0)}: no such row or column in the hypotheses table")
        v = row[col]
        if isinstance(v, float):
            return fmt(v, row.get(f"{col}_lo"), row.get(f"{col}_hi"), ".3g")
        return str(v)

    return PLACEHOLDER.sub(value, template)


def assets_table() -> str:
    """The shipped networks as their manifest records them: size, training budget, test accuracy."""
    from harness.testbed import assets

    manifest = assets.read_manifest()
    rows = []
    for name, m in sorted(manifest.items()):
        if not m.get("parameter_count"):  # feature banks: data, not networks
            continue
        cfg = m.get("config", {}) or {}
        extra = cfg.get("extra", {}) or {}
        trained = ", ".join(f"{extra[k]} {k}" for k in ("epochs", "kimg") if k in extra) + f" ({cfg.get('steps', '?')} steps)"
        acc = (m.get("metrics") or {}).get("test_accuracy")
        rows.append([f"`{name}`", str(m.get("parameter_count", "")), trained,
                     f"{cfg.get('batch_size', '')}, {cfg.get('lr', '')}, {tuple(cfg.get('betas', ()))}",
                     fmt(acc) if acc is not None else ""])
    return markdown.table(["asset", "parameters", "trained", "batch, lr, betas", "test accuracy"], rows)


def seed000_section() -> str:
    from harness.testbed.baselines import SEED000_ROWS, SEED000_SOURCE

    rows = [[str(r[k]) for k in ("entry", "published_precision", "published_recall", "published_kid_inception")]
            for r in SEED000_ROWS]
    return (f"## Seed 000's Table 1 (theirs: {SEED000_SOURCE})\n\n"
            + markdown.table(["entry (theirs)", "precision", "recall", "KID (Inception)"], rows) +
            "\n\nWhat n = 100 can resolve is measured in `results/sample_size/` (`python -m harness.sample_size`).\n")

def _repo_relative(path: Path) -> str:
    """A path inside the checkout as the checkout sees it (a manifest must not name this machine's folders)."""
    try:
        return str(Path(path).resolve().relative_to(DEFAULT_SPEC.parent.parent.parent))
    except ValueError:
        return str(path)


def heading_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown viewers) give a heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def contents(parts: list[str]) -> str:
    """A linked list of the report's sections (its ``## `` headings): the report runs to hundreds of lines."""
    heads = [line[3:] for part in parts for line in part.splitlines() if line.startswith("## ")]
    return "**Contents:** " + " · ".join(f"[{h.split(' (')[0]}](#{heading_anchor(h)})" for h in heads) + "\n"


def write_report(spec_path: Path, results_dir: Path, out: Path, command: str,
                 hypotheses_doc: Path = HYPOTHESES_DOC) -> str:
    t0 = time.time()
    spec = load_spec(spec_path)
    cache: dict[str, list[RunRecord]] = {}

    def records_of(study: str) -> list[RunRecord]:
        if study not in cache:
            cache[study] = study_records(results_dir, study)
        return cache[study]

    rows, keys, curve_rows, curve_keys = [], [], [], []
    for h in spec["hypothesis"]:
        r, k = hypothesis_rows(h, records_of(h.study))
        # rows read at a curve point have the curves' n, so they get a table of their own
        into, into_keys = (rows, keys) if h.at_kimg is None else (curve_rows, curve_keys)
        into += r
        into_keys += [x for x in k if x not in into_keys]
    reproductions = [reproduction_section(r, results_dir) for r in spec.get("reproduction", [])]
    controls = [reproduction_section(r, results_dir) for r in spec.get("control", [])]
    fill_rows = rows + curve_rows + [row for _, rs in reproductions + controls for row in rs]
    hyp_ns = sorted({e.n for h in spec["hypothesis"] if h.at_kimg is None
                     for r in records_of(h.study) if r.done for e in (r.start, r.final)})
    curve_ns = sorted({int(v) for r in curve_rows for v in str(r.get("n") or "").split(",") if v})  # the rows' eval_n
    fig_dir = out.parent / "report"
    for stale in fig_dir.glob("fig*.png"):  # figures of an earlier spec would outlive their numbering
        stale.unlink()
    figures = [figure(f, results_dir, fig_dir, i + 1, records_of) for i, f in enumerate(spec.get("figure", []))]
    parts = [f"# {spec['title']}\n",
             "*Generated by `python -m harness.diagnosis` from the study storages and run directories listed below; "
             "every number is measured here unless a row says it is seed 000's.*\n",
             f"## The question\n\n{spec['question'].strip()}\n",
             f"## The answer\n\n{fill(spec['answer'].strip(), fill_rows)}\n",
             *([f"## What the evidence says\n\n{fill(spec['evidence'].strip(), fill_rows)}\n"] if spec.get("evidence") else []),
             f"## Setup\n\n{spec.get('setup', '').strip()}\n\nShipped assets (harness/assets/manifest.json):\n\n{assets_table()}\n",
             "## The failing configuration, reproduced\n\nEach group of runs against its own starting generator "
             "(paired per seed, same evaluation latents), final EMA generator in every feature space; mean "
             "[95% interval].\n\n" + ("\n".join(md for md, _ in reproductions) or "*(none)*\n"),
             *(["## Controls\n\nRuns that test the answer rather than reproduce the failure, against their own "
                "starting generator (or, where a table's verdict column says so, an earlier curve point of the same "
                "run); mean [95% interval].\n\n" + "\n".join(md for md, _ in controls)] if controls else []),
             "## Hypotheses: each change against its reference\n\n"
             "A fix is measured against the failing configuration it starts from (`fix=as_is`, "
             "`single_fix=as_reported`); a porting mistake against the faithful loop it is added to (`mistake=none`); "
             "a row with another reference (e.g. one dose against the next) names it in the change column. "
             f"Paired per seed (same evaluation latents), final EMA generator at n = {', '.join(map(str, hyp_ns)) or '-'} "
             "in every feature space; mean [95% interval]; verdicts by the rule in docs/metrics.md. The study column "
             "links each row's own table, whose header states its setting (preset, teacher, learning rates).\n\n" + (hypotheses_table(rows, keys) if rows else "*(no hypothesis rows)*") + "\n\n"
             + rowless_note(documented_hypotheses(hypotheses_doc.read_text()), rows + curve_rows),
             *(["## Hypotheses at equal generator updates\n\n"
                "Two round strategies make different numbers of generator updates per round, so their final rows "
                "compare different amounts of generator training. Here each change is read at the curve point where "
                "both have drawn the same kimg of generator samples (the same number of generator updates at the "
                f"same batch), paired per seed on the same first n = {', '.join(map(str, curve_ns)) or '-'} evaluation "
                "latents; the start is each seed's round-0 curve point at that n; intervals are t over seeds. "
                "Placeholders name these rows' study as `study@KIMGkimg`.\n\n"
                + hypotheses_table(curve_rows, curve_keys) + "\n"] if curve_rows else []),
             "## Figures\n\n" + ("\n".join(figures) if figures else "*(none)*\n"),
             seed000_section(),
             "## Reproduce\n\n" + "\n".join(f"- `{s}`: results/{s}/ (its manifest.json names the command)"
                                             for s in sorted(cache)) + "\n"]
    parts.insert(2, contents(parts[2:]))
    md = "\n".join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    pd.DataFrame(rows + curve_rows).to_csv(out.parent / "report" / "hypotheses.csv", index=False) if rows + curve_rows else None
    write_json(out.parent / "report" / "manifest.json", make_manifest(
        command=command, config={"spec": _repo_relative(spec_path), "results_dir": str(results_dir), "out": str(out),
                                 "studies": sorted(cache)}, seed=None, wall_s=time.time() - t0))
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m harness.diagnosis", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="report spec (TOML)")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--out", type=Path, default=None, help="default: RESULTS_DIR/REPORT.md")
    args = p.parse_args(argv)
    git_commit()
    command = " ".join(["python -m harness.diagnosis"] + (argv if argv is not None else sys.argv[1:]))
    try:
        md = write_report(args.spec, args.results_dir, args.out or args.results_dir / "REPORT.md", command)
    except ReportSpecError as err:
        raise SystemExit(f"error: {err}") from None
    print(md)


if __name__ == "__main__":
    main()
