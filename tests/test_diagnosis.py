"""The REPORT generator (harness.diagnosis) on a tiny fixture study: every section is written, placeholders are
filled from the measured rows, figures are drawn, and a bad spec is a one-line error."""

import json
import re

import pytest

from harness.reporting import diagnosis, diagnosis_tables

SPEC = '''
title = "Fixture diagnosis"
question = "Does a larger generator learning rate break the toy?"
setup = "The exact-score toy, 2 seeds, a few rounds: a fixture, not a result."
answer = "Raising the learning rate changes MMD² by {toy_study-smoke|toy_lr=0.003|r_mmd2} ({toy_study-smoke|toy_lr=0.003|verdict_vs_ref})."
evidence = "At the base lr, DI changes it by {base|toy|d_mmd2}; its mode-mass TV ends at {toy-control|toy|mode_mass_tv}."

[[control]]
name = "toy-control"
title = "The base lr as a control"
runs = ["toy_study-smoke/runs/toy_lr=0.001_seed*"]

[[reproduction]]
name = "base"
title = "The base lr, against the starting generator"
runs = ["toy_study-smoke/runs/toy_lr=0.001_seed*"]

[[figure]]
kind = "curves"
runs = ["toy_study-smoke/runs/toy_lr=0.001_seed*"]
name = "base-runs"
caption = "the base lr's runs, from their run directories"

[[hypothesis]]
name = "step-sizes"
study = "toy_study-smoke"
reference = "toy_lr=0.001"

[[figure]]
kind = "curves"
study = "toy_study-smoke"
caption = "MMD² over kimg"

[[figure]]
kind = "samples"
study = "toy_study-smoke"
caption = "start and end"

[[figure]]
kind = "diagnostics"
study = "toy_study-smoke"
caption = "diagnostics"

[[figure]]
kind = "effects"
study = "toy_study-smoke"
variants = ["toy_lr=0.003", "toy_lr=0.001"]
caption = "the ladder"
'''


@pytest.fixture
def fixture_study(toy_smoke_results):
    return toy_smoke_results


def test_report_writes_every_section_from_the_measured_rows(fixture_study, tmp_path):
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out" / "REPORT.md"
    md = diagnosis.write_report(spec, fixture_study, out, "python -m harness.diagnosis (test)")
    assert out.read_text() == md
    for section in ("## The question", "## The answer", "## What the evidence says", "## Setup", "## Controls",
                    "### The base lr as a control", "final mode-mass TV", "## The failing configuration, reproduced",
                    "### The base lr, against the starting generator", "## Hypotheses", "## Figures",
                    "## Seed 000's Table 1 (theirs", "## Reproduce"):
        assert section in md, section
    assert "{" not in md.split("## The answer")[1].split("## Setup")[0]  # every placeholder filled, evidence's too
    # the contents line links every section, in order, by the anchor its heading gets
    heads = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    links = re.findall(r"\]\(#([^)]+)\)", md.split("## The question")[0])
    assert links == [diagnosis.heading_anchor(h) for h in heads] and len(links) >= 9
    rows = __import__("pandas").read_csv(out.parent / "report" / "hypotheses.csv")
    assert set(rows.variant) == {"toy_lr=0.003", "toy_lr=0.0001"} and (rows.reference == "toy_lr=0.001").all()
    # each hypothesis row names the study it comes from, linked to that study's own table
    assert "| [toy_study-smoke](toy_study-smoke/table.md) | `toy_lr=0.003` vs `toy_lr=0.001` |" in md
    measured = rows.set_index("variant").loc["toy_lr=0.003", "r_mmd2"]
    assert f"{measured:.3g}" in md  # the answer carries the measured number
    assert (out.parent / "report" / "fig1-curves-base-runs.png").is_file()
    # each caption states the seeds its figure drew, per variant, counted from the runs (not written by hand)
    assert "*Figure 2.* MMD² over kimg. Seeds: toy_lr=0.001 2, toy_lr=0.003 2, toy_lr=0.0001 2." in md
    for i, kind in enumerate(("curves", "samples", "diagnostics", "effects"), start=2):
        assert (out.parent / "report" / f"fig{i}-{kind}-toy_study-smoke.png").is_file()
    # an effects figure counts the seeds of the variants it lists, and only those
    assert "*Figure 5.* the ladder. Seeds: toy_lr=0.003 2, toy_lr=0.001 2." in md
    base = __import__("harness.reporting.run_comparison", fromlist=["aggregate"])
    runs = [base.load_run(d) for d in sorted((fixture_study / "toy_study-smoke" / "runs").glob("toy_lr=0.001_seed*"))]
    table, _ = base.aggregate(runs)
    change = table[table.kind == "variant"].iloc[0]["d_mmd2"]
    assert f"{change:.3g}" in md.split("## What the evidence says")[1].split("## Setup")[0]  # the reproduction's too
    manifest = json.loads((out.parent / "report" / "manifest.json").read_text())
    assert manifest["config"]["studies"] == ["toy_study-smoke"] and "git_commit" in manifest


def test_heading_anchors_follow_githubs_rule():
    """Known answers: the anchors GitHub gives these headings of the report."""
    assert diagnosis.heading_anchor("The failing configuration, reproduced") == "the-failing-configuration-reproduced"
    assert diagnosis.heading_anchor("Hypotheses: each change against its reference") == "hypotheses-each-change-against-its-reference"
    assert (diagnosis.heading_anchor("Seed 000's Table 1 (theirs: n=100, Inception features) - not measured here")
            == "seed-000s-table-1-theirs-n100-inception-features---not-measured-here")


def test_bad_specs_are_one_line_errors(fixture_study, tmp_path):
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC.replace('reference = "toy_lr=0.001"', 'reference = "toy_lr=9"'))
    with pytest.raises(SystemExit, match="no variant 'toy_lr=9'"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    spec.write_text(SPEC.replace('runs = ["toy_study-smoke/runs/toy_lr=0.001_seed*"]', 'runs = ["nowhere/*"]', 1))
    with pytest.raises(SystemExit, match="no finished run directory matches nowhere"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    spec.write_text(SPEC.replace("r_mmd2}", "r_nothing}"))
    with pytest.raises(SystemExit, match="placeholder"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    spec.write_text(SPEC.replace('runs = ["toy_study-smoke/runs/toy_lr=0.001_seed*"]\n', "", 1))
    with pytest.raises(SystemExit, match=r"a \[\[control\]\] entry lacks runs"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    spec.write_text(SPEC.replace('kind = "effects"', 'kind = "forest"'))
    with pytest.raises(SystemExit, match="figure kind must be one of curves, samples, diagnostics, classes, effects"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    with pytest.raises(SystemExit, match="no report spec"):
        diagnosis.main(["--spec", str(tmp_path / "missing.toml")])


def test_a_variant_with_two_references_is_named_with_its_reference(fixture_study, tmp_path):
    """A dose compared both with the failing configuration and with the previous dose: ``variant vs reference``
    picks the row, the paired change against that reference, and the bare variant is refused as ambiguous."""
    second = '\n[[hypothesis]]\nname = "step-sizes"\nstudy = "toy_study-smoke"\nreference = "toy_lr=0.0001"\n' \
             'variants = ["toy_lr=0.003"]\n'
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC.replace("{toy_study-smoke|toy_lr=0.003|", "{toy_study-smoke|toy_lr=0.003 vs toy_lr=0.0001|")
                    + second)
    # the change column's footing, by hand: each seed's final MMD² of the dose minus that of the reference
    runs = fixture_study / "toy_study-smoke" / "runs"
    final = {d.name: json.loads((d / "summary.json").read_text())["final"]["values"]["mmd2"] for d in runs.iterdir()}
    by_hand = sum(final[f"toy_lr=0.003_seed{s}"] - final[f"toy_lr=0.0001_seed{s}"] for s in (0, 1)) / 2
    against_base = sum(final[f"toy_lr=0.003_seed{s}"] - final[f"toy_lr=0.001_seed{s}"] for s in (0, 1)) / 2
    assert f"{by_hand:.3g}" != f"{against_base:.3g}"  # otherwise the check below could not tell the rows apart
    md = diagnosis.write_report(spec, fixture_study, tmp_path / "R.md", "test")
    answer = md.split("## The answer")[1].split("## What the evidence says")[0]
    assert f"{by_hand:.3g}" in answer and f"{against_base:.3g}" not in answer
    assert "| `toy_lr=0.003` vs `toy_lr=0.0001` |" in md and "| `toy_lr=0.003` vs `toy_lr=0.001` |" in md
    spec.write_text(SPEC + second)  # the answer's bare {toy_study-smoke|toy_lr=0.003|...} is now ambiguous
    with pytest.raises(SystemExit, match="several references"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R2.md")])


def test_the_effects_figure_draws_each_rows_paired_change_in_the_listed_order():
    """effect_panels: one panel per metric with a paired change, titled with the better direction, its points in
    the rows' order with their own mean and interval; a metric without a change (density) and a row without a
    completed seed (NaN) are handled, not dropped silently into another row's place."""
    import math

    from harness.reporting.plots import effect_panels

    rows = [{"variant": "lr=high", "n_seeds": 3, "d_kid_vgg": 5.0, "d_kid_vgg_lo": 4.0, "d_kid_vgg_hi": 6.0,
             "d_recall_vgg": -0.1, "d_recall_vgg_lo": -0.2, "d_recall_vgg_hi": 0.0},
            {"variant": "lr=low", "n_seeds": 5, "d_kid_vgg": -1.0, "d_kid_vgg_lo": -2.0, "d_kid_vgg_hi": 0.5,
             "d_recall_vgg": 0.02, "d_recall_vgg_lo": 0.01, "d_recall_vgg_hi": 0.03},
            {"variant": "lr=broken", "n_seeds": 0}]
    panels = effect_panels(rows, ["kid_vgg", "density_vgg", "recall_vgg"])
    assert [t for t, _ in panels] == ["Δ KID (vgg), lower is better", "Δ recall (vgg), higher is better"]
    kid = panels[0][1]
    assert kid[:2] == [("lr=high (3 seeds)", 5.0, 4.0, 6.0), ("lr=low (5 seeds)", -1.0, -2.0, 0.5)]
    assert kid[2][0] == "lr=broken (0 seeds)" and all(math.isnan(v) for v in kid[2][1:])
    assert panels[1][1][1] == ("lr=low (5 seeds)", 0.02, 0.01, 0.03)
    assert effect_panels(rows, ["density_vgg"]) == []  # nothing to draw: no figure, not an empty one


def test_a_hypothesis_at_kimg_pairs_the_curve_points_at_that_kimg(fixture_study, tmp_path):
    """``at_kimg``: each seed's curve value at that kimg (evals.csv) minus the reference's at the same kimg, in a
    table of its own at the curves' n; a run without a point there is not paired; a bad value is a one-line error."""
    import pandas as pd

    runs = fixture_study / "toy_study-smoke" / "runs"
    evals = {d.name: pd.read_csv(d / "evals.csv") for d in runs.iterdir()}
    kimg = float(evals["toy_lr=0.003_seed0"].kimg.iloc[1])  # the first curve point after round 0
    assert 0 < kimg < evals["toy_lr=0.003_seed0"].kimg.iloc[-1]  # not the final point: the final rows would agree
    at = lambda name: float(evals[name].set_index("kimg").loc[kimg, "mmd2"])
    by_hand = sum(at(f"toy_lr=0.003_seed{s}") - at(f"toy_lr=0.001_seed{s}") for s in (0, 1)) / 2
    final = {d.name: json.loads((d / "summary.json").read_text())["final"]["values"]["mmd2"] for d in runs.iterdir()}
    at_final = sum(final[f"toy_lr=0.003_seed{s}"] - final[f"toy_lr=0.001_seed{s}"] for s in (0, 1)) / 2
    assert f"{by_hand:.3g}" != f"{at_final:.3g}"  # otherwise the check below could not tell the two apart
    curve_n = int(evals["toy_lr=0.003_seed0"].n.iloc[1])
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC.replace("{toy_study-smoke|toy_lr=0.003|r_mmd2}", f"{{toy_study-smoke@{kimg:g}kimg|toy_lr=0.003|r_mmd2}}")
                    + f'\n[[hypothesis]]\nname = "step-sizes"\nstudy = "toy_study-smoke"\nreference = "toy_lr=0.001"\n'
                      f'variants = ["toy_lr=0.003"]\nat_kimg = {kimg}\n')
    md = diagnosis.write_report(spec, fixture_study, tmp_path / "R.md", "test")
    answer = md.split("## The answer")[1].split("## What the evidence says")[0]
    assert f"{by_hand:.3g}" in answer and f"{at_final:.3g}" not in answer
    section = md.split("## Hypotheses at equal generator updates")[1].split("## Figures")[0]
    assert f"n = {curve_n} evaluation latents" in section
    assert f"| {kimg:g} | `toy_lr=0.003` vs `toy_lr=0.001` | 2 (screening) | {by_hand:.4g} [" in section
    rows = pd.read_csv(tmp_path / "report" / "hypotheses.csv")
    assert rows.at_kimg.notna().sum() == 1  # the final rows are still there, without at_kimg
    # a run that never reached the kimg is not paired
    missing = diagnosis_tables.at_kimg(diagnosis.study_records(fixture_study, "toy_study-smoke"), 1e6)
    assert all(not r.done and r.status == "no curve point at 1e+06 kimg" for r in missing)
    spec.write_text(SPEC + '\n[[hypothesis]]\nname = "x"\nstudy = "toy_study-smoke"\nreference = "toy_lr=0.001"\nat_kimg = "late"\n')
    with pytest.raises(SystemExit, match="at_kimg must be a positive number, got 'late'"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R2.md")])


def test_curves_against_lr_updates_use_each_runs_generator_lr_and_updates_per_round(fixture_study, tmp_path):
    import pandas as pd

    runs = fixture_study / "toy_study-smoke" / "runs"
    for d in runs.iterdir():
        cfg = json.loads((d / "config.json").read_text())
        rounds = pd.read_csv(d / "evals.csv")["round"]
        expected = rounds * cfg.get("gen_steps", 1) * cfg["lr_gen"]
        assert diagnosis_tables.lr_updates(rounds, d).tolist() == pytest.approx(expected.tolist())
    lrs = {json.loads((d / "config.json").read_text())["lr_gen"] for d in runs.iterdir()}
    assert len(lrs) == 3  # the three toy_lr values: the x axis differs between variants at the same round
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC.replace('name = "base-runs"', 'name = "base-runs"\nx = "lr_updates"'))
    diagnosis.write_report(spec, fixture_study, tmp_path / "R.md", "test")
    assert (tmp_path / "report" / "fig1-curves-base-runs.png").is_file()
    curves, samples = 'kind = "curves"\nstudy = "toy_study-smoke"', 'kind = "samples"\nstudy = "toy_study-smoke"'
    for bad in (SPEC.replace(curves, curves + '\nx = "seconds"'), SPEC.replace(samples, samples + '\nx = "kimg"')):
        spec.write_text(bad)
        with pytest.raises(SystemExit, match="a figure's x is kimg or lr_updates, and only for kind = curves"):
            diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R2.md")])


def test_a_control_at_lr_updates_reads_each_run_where_its_step_budget_is_reached(fixture_study, tmp_path):
    """``at_lr_updates``: each run's change from its round-0 curve point to the point where lr_gen x updates equals
    the budget; a run that never reaches it exactly has no completed seed; the same seed twice is refused."""
    import pandas as pd

    runs = fixture_study / "toy_study-smoke" / "runs"
    lr = {d.name: json.loads((d / "config.json").read_text())["lr_gen"] for d in runs.iterdir()}
    evals = {d.name: pd.read_csv(d / "evals.csv").set_index("round") for d in runs.iterdir()}
    budget = 5 * lr["toy_lr=0.001_seed0"]  # round 5 at lr 1e-3; no curve point of the other lrs lands on it
    by_hand = sum(evals[f"toy_lr=0.001_seed{s}"].mmd2[5] - evals[f"toy_lr=0.001_seed{s}"].mmd2[0] for s in (0, 1)) / 2
    rep = {"name": "budget", "title": "at one step budget", "runs": ["toy_study-smoke/runs/*"], "at_lr_updates": budget}
    md, rows = diagnosis.reproduction_section(rep, fixture_study)
    by_variant = {r["variant"]: r for r in rows}
    at_base = [r for v, r in by_variant.items() if "0.001" in v and "0.0001" not in v][0]
    assert at_base["n_seeds"] == 2 and at_base["d_mmd2"] == pytest.approx(by_hand)
    assert sorted(r["verdict"] for r in rows if r is not at_base) == ["no completed seed"] * 2
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC + '\n[[control]]\nname = "b"\ntitle = "t"\nruns = ["toy_study-smoke/runs/*"]\nat_lr_updates = -1\n')
    with pytest.raises(SystemExit, match="at_lr_updates must be a positive number, got -1"):
        diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])
    twice = tmp_path / "twice"  # one run copied into two directories
    for copy in ("a", "b"):
        (twice / copy).mkdir(parents=True)
        for f in ("summary.json", "config.json", "evals.csv"):
            (twice / copy / f).write_bytes((runs / "toy_lr=0.001_seed0" / f).read_bytes())
    with pytest.raises(SystemExit, match="are the same configuration .* and seed \\(0\\)"):
        diagnosis.reproduction_section({"name": "x", "title": "x", "runs": ["*"]}, twice)


def test_a_control_from_lr_updates_pairs_two_late_points_of_each_run(fixture_study, tmp_path):
    """``from_lr_updates``: each run's change between its own two curve points (not from round 0), so a row says
    what a run still changed late in training; the table says which point it is compared with; a spec whose
    from-point is not before its at-point, or has no at-point, is a one-line error."""
    import pandas as pd

    runs = fixture_study / "toy_study-smoke" / "runs"
    lr = json.loads((runs / "toy_lr=0.001_seed0" / "config.json").read_text())["lr_gen"]
    evals = {s: pd.read_csv(runs / f"toy_lr=0.001_seed{s}" / "evals.csv").set_index("round") for s in (0, 1)}
    by_hand = sum(evals[s].mmd2[10] - evals[s].mmd2[5] for s in (0, 1)) / 2
    from_zero = sum(evals[s].mmd2[10] - evals[s].mmd2[0] for s in (0, 1)) / 2
    assert by_hand != pytest.approx(from_zero)  # else the test could not tell the two start points apart
    rep = {"name": "late", "title": "late", "runs": ["toy_study-smoke/runs/toy_lr=0.001_seed*"],
           "at_lr_updates": 10 * lr, "from_lr_updates": 5 * lr}
    md, rows = diagnosis.reproduction_section(rep, fixture_study)
    assert len(rows) == 1 and rows[0]["n_seeds"] == 2 and rows[0]["d_mmd2"] == pytest.approx(by_hand)
    assert f"verdict vs its own point at lr_gen x updates = {5 * lr:g}" in md
    missing = {**rep, "from_lr_updates": 7 * lr}  # no curve point at round 7
    assert diagnosis.reproduction_section(missing, fixture_study)[1][0]["verdict"] == "no completed seed"
    spec = tmp_path / "report.toml"
    for extra, message in (("at_lr_updates = 0.01\nfrom_lr_updates = 0.01", "from_lr_updates needs a larger at_lr_updates"),
                           ("from_lr_updates = 0.01", "from_lr_updates needs a larger at_lr_updates")):
        spec.write_text(SPEC + f'\n[[control]]\nname = "b"\ntitle = "t"\nruns = ["toy_study-smoke/runs/*"]\n{extra}\n')
        with pytest.raises(SystemExit, match=message):
            diagnosis.main(["--spec", str(spec), "--results-dir", str(fixture_study), "--out", str(tmp_path / "R.md")])


def test_hypotheses_the_doc_indexes_without_a_row_are_named_under_the_table(fixture_study, tmp_path):
    doc = tmp_path / "hypotheses.md"
    doc.write_text("| hypothesis | what | toggle |\n| --- | --- | --- |\n"
                   "| [aux-init](#aux-init) | the aux net | `aux_init` |\n"
                   "| [step-sizes](#step-sizes) | lrs | `lr_gen` |\n"
                   "| [mode-seeking](#mode-seeking) | the divergence | toy |\n\n"
                   "A line that links [elsewhere](#aux-init) is not an index row.\n")
    assert diagnosis.documented_hypotheses(doc.read_text()) == ["aux-init", "step-sizes", "mode-seeking"]
    spec = tmp_path / "report.toml"
    spec.write_text(SPEC)
    md = diagnosis.write_report(spec, fixture_study, tmp_path / "R.md", "test", hypotheses_doc=doc)
    section = md.split("## Hypotheses: each change")[1].split("## Figures")[0]
    # the fixture's one hypothesis (step-sizes) has rows; the other two are named, in the doc's order
    assert ("without a row here (2 of 3): [aux-init](../docs/hypotheses.md#aux-init), "
            "[mode-seeking](../docs/hypotheses.md#mode-seeking).") in section
    doc.write_text("| [step-sizes](#step-sizes) | lrs | `lr_gen` |\n")
    md = diagnosis.write_report(spec, fixture_study, tmp_path / "R.md", "test", hypotheses_doc=doc)
    assert "Every hypothesis indexed in docs/hypotheses.md (1) has a row here." in md
    # the repository's own doc indexes every hypothesis its report spec names
    documented = diagnosis.documented_hypotheses(diagnosis.HYPOTHESES_DOC.read_text())
    named = {h.name for h in diagnosis.load_spec(diagnosis.DEFAULT_SPEC)["hypothesis"]}
    assert named <= set(documented) and len(documented) >= 15
