import json

import numpy as np
import pandas as pd
import pytest

from harness.method.config import DIConfig
from harness.method.presets import preset
from harness.reporting.run_comparison import aggregate, write_report


def fake_run(root, name, cfg: DIConfig, start_kid, final_kid, status="completed", toy=False):
    d = root / name
    d.mkdir()
    cfg.save(d / "config.json")
    if toy:
        values = lambda k: {"mmd2": k, "in_mode_fraction": 0.9, "modes_covered": 8}
    else:
        values = lambda k: {"kid_vgg": k, "precision_vgg": 0.5, "recall_vgg": 0.4, "class_tv_vgg": 0.1, "fid_vgg": 10.0}
    evaluation = lambda k: {"n": 100, "values": values(k), "halves": {}}
    (d / "summary.json").write_text(json.dumps({"status": status, "reason": "", "start": evaluation(start_kid),
                                                "final": evaluation(final_kid), "wall_s": 1.0}))
    key = "mmd2" if toy else "kid_vgg"
    pd.DataFrame({"round": [0, 10], key: [start_kid, final_kid], "n": [100, 100]}).to_csv(d / "evals.csv", index=False)
    return d


def test_aggregate_groups_seeds_names_variants_and_gives_t_intervals(tmp_path):
    dirs = []
    for seed, final in enumerate([1.0, 1.1, 0.9]):
        dirs.append(fake_run(tmp_path, f"a{seed}", preset("reference-gan", seed=seed, eval_n=100), 2.0, final))
    for seed, final in enumerate([2.5, 2.6, 2.4]):
        dirs.append(fake_run(tmp_path, f"b{seed}", preset("reference-gan", seed=seed, aux_steps=5, eval_n=999), 2.0, final))
    table = write_report(dirs, tmp_path / "out", "t", "test").set_index("variant")
    assert list(table.index) == ["starting generator (before DI)", "reference-gan aux_steps=1", "reference-gan aux_steps=5"]
    a = table.loc["reference-gan aux_steps=1"]
    half = 4.302652729911275 * 0.1 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(3)
    assert a.n_seeds == 3 and a.kid_vgg == pytest.approx(1.0) and a.kid_vgg_lo == pytest.approx(1.0 - half)
    assert a.verdict == "improved (KID)" and a.evidence == "screening"
    assert table.loc["reference-gan aux_steps=5"].verdict == "degraded (KID)"
    md = (tmp_path / "out" / "table.md").read_text()
    assert "KID (MMD², raw, vgg features)" in md and "n = 100" in md
    for name in ("table.csv", "table.md", "curves.png", "manifest.json"):
        assert (tmp_path / "out" / name).is_file()


def test_failed_runs_are_counted_and_one_seed_is_not_judged(tmp_path):
    dirs = [fake_run(tmp_path, "x0", preset("toy", seed=0), 1.0, 0.5, toy=True),
            fake_run(tmp_path, "x1", preset("toy", seed=1), 1.0, 0.5, "diverged", toy=True)]
    table, keys = aggregate([{"dir": str(d), "summary": json.loads((d / "summary.json").read_text()),
                              "config": json.loads((d / "config.json").read_text())} for d in dirs])
    row = table[table.kind == "variant"].iloc[0]
    assert keys[0] == "mmd2" and row.n_failed == 1 and row.n_seeds == 1 and row.verdict == "1 seed: not judged"


def test_diagnostics_and_curves_plot_several_runs_concatenated(tmp_path):
    """Callers concatenate each run's rounds.csv and evals.csv, so row labels repeat across runs; the gradient-signal
    panel once failed on exactly that ("cannot reindex on an axis with duplicate labels") with two runs."""
    from harness.reporting.plots import diagnostics, metric_curves

    def run(variant, seed):
        rounds = pd.DataFrame({"round": [1, 2, 3, 4], "kimg": [0.1, 0.2, 0.3, 0.4], "aux_loss": [3.0, 2.0, 2.0, 1.0],
                               "teacher_loss": [2.5, 2.5, 2.4, 2.4], "gen_grad_norm": [1.0, 2.0, 2.0, 2.1],
                               "gap_s0-0.05": [1.0, 1.1, 1.2, 1.3], "gap_s0.05-0.2": [0.5, 0.6, 0.7, 0.8]})
        evals = pd.DataFrame({"round": [0, 2, 4], "kimg": [0.0, 0.2, 0.4], "n": [100] * 3, "kid_vgg": [9.0, 8.0, 7.5],
                              "grad_signal": [None, 1.2, 1.1]})
        return rounds.assign(variant=variant, seed=seed), evals.assign(variant=variant, seed=seed)

    runs = [run("a", 0), run("a", 1), run("b", 0)]
    diagnostics(pd.concat([r for r, _ in runs]), tmp_path / "diag.png", "t", pd.concat([e for _, e in runs]))
    metric_curves(pd.concat([e for _, e in runs]), tmp_path / "curves.png", "t")
    assert (tmp_path / "diag.png").stat().st_size > 0 and (tmp_path / "curves.png").stat().st_size > 0


def test_curves_with_bootstrap_bands_are_byte_identical_when_drawn_twice(tmp_path):
    """The 95% bands are seaborn bootstraps; unseeded, every regeneration of the report rewrote every figure's pixels
    although no result had changed. Two draws of the same data must give the same file."""
    from harness.reporting.plots import diagnostics, metric_curves

    rng = np.random.default_rng(0)
    evals = pd.DataFrame({"round": [0, 2, 4] * 6, "kimg": [0.0, 0.2, 0.4] * 6, "n": [100] * 18,
                          "kid_vgg": rng.normal(8.0, 1.0, 18), "seed": np.repeat(range(6), 3), "variant": "a"})
    rounds = pd.DataFrame({"round": [1, 2, 3] * 6, "kimg": [0.1, 0.2, 0.3] * 6, "aux_loss": rng.normal(2, 1, 18),
                           "teacher_loss": rng.normal(2, 1, 18), "gen_grad_norm": rng.normal(2, 0.5, 18),
                           "gap_s0-0.05": rng.normal(1, 0.2, 18), "seed": np.repeat(range(6), 3), "variant": "a"})
    for name in ("one", "two"):
        metric_curves(evals, tmp_path / f"curves-{name}.png", "t")
        diagnostics(rounds, tmp_path / f"diag-{name}.png", "t")
    assert (tmp_path / "curves-one.png").read_bytes() == (tmp_path / "curves-two.png").read_bytes()
    assert (tmp_path / "diag-one.png").read_bytes() == (tmp_path / "diag-two.png").read_bytes()


def test_before_after_title_does_not_overlap_the_first_rows_panel_titles(tmp_path, monkeypatch):
    """The sample grids' two-line figure title once sat on top of the first row's panel titles (tight_layout alone
    ignores a suptitle); measured on the laid-out figure, just before it is written."""
    import matplotlib.pyplot as plt
    import numpy as np

    from harness.reporting import plots

    png = tmp_path / "grid.png"
    plt.imsave(png, np.zeros((16, 16)), cmap="gray")
    measured = {}
    write = plots.save_figure

    def measure_then_write(fig, path, dpi, tight_layout=True):
        if tight_layout:
            fig.tight_layout()
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        measured["title_bottom"] = fig._suptitle.get_window_extent(renderer).y0
        measured["panels_top"] = max(ax.title.get_window_extent(renderer).y1 for ax in fig.axes if ax.get_title())
        write(fig, path, dpi, tight_layout=False)

    monkeypatch.setattr(plots, "save_figure", measure_then_write)
    rows = [(f"fix=v{i} (seed 0)", png, png) for i in range(6)]
    plots.before_after(rows, [("teacher", png)], tmp_path / "samples.png", "study [CPU budget]")
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert measured["title_bottom"] >= measured["panels_top"]
