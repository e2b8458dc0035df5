"""The study table as printed: the compact one fits 100 columns, never cuts a name, and marks each space's change by
its meaning; --wide prints the full one."""

from pathlib import Path

import pandas as pd

from harness.reporting.terminal_table import WIDTH, compact_table, short_verdict, space_mark

ROOT = Path(__file__).resolve().parent.parent


def test_marks_follow_the_metrics_direction_and_the_interval():
    # KID: lower is better; recall: higher is better
    assert space_mark({"d_kid_vgg_lo": -2.0, "d_kid_vgg_hi": -1.0}, "kid_vgg", lower_is_better=True) == "+"
    assert space_mark({"d_kid_vgg_lo": 1.0, "d_kid_vgg_hi": 2.0}, "kid_vgg", lower_is_better=True) == "-"
    assert space_mark({"d_recall_vgg_lo": -0.1, "d_recall_vgg_hi": -0.01}, "recall_vgg", lower_is_better=False) == "-"
    assert space_mark({"d_kid_vgg_lo": -1.0, "d_kid_vgg_hi": 1.0}, "kid_vgg", lower_is_better=True) == "."
    assert space_mark({}, "kid_vgg", lower_is_better=True) == "."


def test_short_verdicts():
    assert short_verdict("degraded (class TV) [in some spaces only: KID]") == "degraded"
    assert short_verdict("feature-space dependent (vgg: improved; resnet: mixed (worse: KID; better: FID))") \
        == "vgg+ resnet±"
    assert short_verdict("no significant change") == "no sig. change"
    assert short_verdict(float("nan")) == ""


def test_a_committed_study_table_fits_100_columns_with_every_name_whole():
    table = pd.read_csv(ROOT / "results" / "reference_gan_fixes" / "table.csv")
    text = compact_table(table, "reference_gan_fixes [CPU budget]", ["results/reference_gan_fixes/table.md"])
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, max(lines, key=len)
    variants = table.loc[table.kind == "variant", "variant"]
    assert all(any(line.startswith(v) for line in lines) for v in variants)  # whole, at the start of a line
    assert "results/reference_gan_fixes/table.md" in text
    # the as_is row: its vgg KID change with both spaces' marks, and its short verdict
    row = table[table.variant == "fix=as_is"].iloc[0]
    line = next(line for line in lines if line.startswith("fix=as_is"))
    assert format(row.d_kid_vgg, "+.3g") in line and line.rstrip().endswith("degraded")


def test_the_toy_table_has_its_own_columns():
    table = pd.DataFrame([{"variant": "lr=0.001", "kind": "variant", "n_seeds": 2, "d_mmd2": -1.2, "d_mmd2_lo": -1.5,
                           "d_mmd2_hi": -0.9, "verdict": "improved (MMD²)"}])
    text = compact_table(table, "toy")
    assert "-1.2 +" in text and "improved" in text and max(map(len, text.splitlines())) <= WIDTH
