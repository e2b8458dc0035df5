"""Studies: every shipped spec maps to valid configs; a study end to end on the exact-score toy (no assets):
outputs, --report reproducibility, two workers without duplicated cells, kill-and-resume, PostgreSQL."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from harness.study import cli as study_mod
from harness.study import spec as study_spec, storage as study_storage, trials as study_trials, workers as study_workers
from harness.study.spec import BUDGETS, all_value_configs, available_studies, grid_cells, load_study

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"freeze_ablation", "update_ratio", "weighting", "t_range", "lr_sweep", "aux_init", "teacher_quality",
            "seed_report_repro", "diagnose"}

TOY_AXIS = """
name = "toy_lr"
description = "generator learning rate on the toy"
kind = "categorical"
field = "lr_gen"
values = [1e-3, 3e-3, 1e-4]
"""
TOY_STUDY = """
name = "toy_study"
description = "test study on the exact-score toy"
preset = "toy"
axes = ["toy_lr"]
sampler = "grid"
objective = "mmd2"
pruner = "none"
baselines = []
[budget.smoke]
rounds = {rounds}
ckpt_every_s = 0
batch_size = 64
eval_every = {eval_every}
eval_n = 300
final_eval_n = 600
seeds = 2
trials = 4
"""
# the fixture's shared budgets (studies/_budgets.toml): the toy study defines only its smoke budget itself
TOY_BUDGETS = "\n".join(f"[budget.{b}]\nrounds = 10\nbatch_size = 64\neval_every = 5\neval_n = 300\nseeds = 2\ntrials = 4"
                        for b in ("smoke", "cpu", "gpu"))


def write_toy_specs(root: Path, rounds: int, eval_every: int) -> Path:
    (root / "ablations").mkdir(parents=True, exist_ok=True)
    (root / "studies").mkdir(exist_ok=True)
    (root / "ablations" / "toy_lr.toml").write_text(TOY_AXIS)
    (root / "studies" / "toy_study.toml").write_text(TOY_STUDY.format(rounds=rounds, eval_every=eval_every))
    (root / "studies" / "_budgets.toml").write_text(TOY_BUDGETS)
    return root


def test_every_shipped_study_parses_and_maps_to_valid_configs():
    assert EXPECTED <= set(available_studies())
    for name in available_studies():
        spec = load_study(name)
        for budget in BUDGETS:
            configs = all_value_configs(spec, budget)
            assert configs and all(c.rounds == spec.budgets[budget]["rounds"] for c in configs)
        if spec.sampler == "grid":
            cells = grid_cells(spec, 3)
            n_values = 1
            for axis in spec.axes:
                n_values *= len(axis.values)
            assert len(cells) == 3 * n_values
            assert len({study_spec.cell_key(c) for c in cells}) == len(cells)  # no repeated cell


def test_every_shipped_axis_maps_each_value_to_a_valid_config():
    """Axes no study uses yet (the diagnosis's new toggles) are checked too: each value is a valid delta from both
    GAN presets, and a categorical value changes only the fields it names."""
    from harness.method.overrides import apply_overrides
    from harness.method.presets import preset

    names = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "ablations").glob("*.toml"))
    assert {"eps_port", "ddpm_port", "gradient_leakage", "generator_mode", "generator_range", "evaluation_target"} <= set(names)
    for name in names:
        axis = study_spec.load_axis(name)
        values = axis.values if axis.kind == "categorical" else [axis.low, axis.high]
        for base_name in ("seed-report", "reference-gan"):
            base = preset(base_name)
            for v in values:
                overrides = axis.overrides(v)
                cfg = apply_overrides(base, {k: study_spec._as_override(x) for k, x in overrides.items()})
                changed = {k for k, x in cfg.to_dict().items() if x != base.to_dict()[k]}
                assert changed <= {k.split(".")[0] for k in overrides}, (name, v, changed)


def test_shared_budgets_fill_what_a_study_file_leaves_out(toy_specs):
    """studies/_budgets.toml is not a study; a study's own [budget.smoke] replaces the shared one whole."""
    toy_specs(rounds=7, eval_every=3)
    assert available_studies() == ["toy_study"]
    spec = load_study("toy_study")
    assert spec.budgets["smoke"]["rounds"] == 7 and "ckpt_every_s" in spec.budgets["smoke"]
    assert spec.budgets["cpu"] == {"rounds": 10, "batch_size": 64, "eval_every": 5, "eval_n": 300, "seeds": 2, "trials": 4}
    assert load_study("freeze_ablation", ROOT).budgets["cpu"]["rounds"] == 150  # a shipped study from the shared file


def test_axis_values_change_what_they_claim():
    spec = load_study("seed_report_repro")
    base = study_spec.build_config(spec, "cpu", {"single_fix": "as_reported"}, 0)
    fixed = study_spec.build_config(spec, "cpu", {"single_fix": "gan_style_optimiser"}, 0)
    assert base.teacher == "ddpm-huber" and base.generator == "gan-weak"
    assert (fixed.lr_gen, fixed.betas_gen) == (2e-4, (0.5, 0.999)) and fixed.teacher == base.teacher
    spec = load_study("freeze_ablation")
    cfgs = {c.freeze_order for c in all_value_configs(spec, "cpu")}
    assert cfgs == {"reference", "clean", "independent_dropout", "teacher_eval"}


def test_unknown_study_lists_the_available_ones():
    with pytest.raises(SystemExit, match="unknown study 'freeze'; available: .*freeze_ablation"):
        study_mod.main(["freeze"])


@pytest.fixture
def toy_specs(tmp_path, monkeypatch):
    def make(rounds=12, eval_every=6):  # the plumbing tests need a few rounds and a mid-run evaluation, not convergence
        root = write_toy_specs(tmp_path / "specs", rounds, eval_every)
        monkeypatch.setenv("HARNESS_SPECS", str(root))
        return root
    return make


def _trials(db):
    st = optuna.load_study(study_name="toy_study", storage=f"sqlite:///{db}")
    return [t for t in st.get_trials() if not t.user_attrs.get("surplus")]


def test_run_cells_trains_without_storage_and_the_study_records_them_without_training(toy_specs, tmp_path):
    """--run-cells (e.g. on a GPU machine without the database) trains only the chosen cells' run directories,
    each from the spec's [base] overrides; the plain command later records them as trials and trains nothing."""
    root = toy_specs(rounds=6, eval_every=3)
    spec_file = root / "studies" / "toy_study.toml"
    spec_file.write_text(spec_file.read_text().replace("baselines = []", "baselines = []\n[base]\nlr_aux = 0.002"))
    res = str(tmp_path / "res")
    with pytest.raises(SystemExit, match="--only 9: not a value"):
        study_mod.main(["toy_study", "--budget", "smoke", "--run-cells", "--only", "9", "--results-dir", res])
    study_mod.main(["toy_study", "--budget", "smoke", "--run-cells", "--only", "0.001", "--workers", "2", "--results-dir", res])
    runs = tmp_path / "res" / "toy_study-smoke" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["toy_lr=0.001_seed0", "toy_lr=0.001_seed1"]
    assert not (runs.parent / "study.db").exists()
    config = json.loads((runs / "toy_lr=0.001_seed0" / "config.json").read_text())
    assert (config["lr_aux"], config["lr_gen"]) == (0.002, 0.001)  # [base], then the axis value
    assert config["threads"] == 1  # two workers on the machine: one torch thread each, as the study's own workers
    trained = {p: p.read_bytes() for p in runs.rglob("*") if p.is_file()}
    # the other cells are trained here; the two from --run-cells are recorded as they are (1 worker: threads 0)
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", res])
    assert {p: p.read_bytes() for p in trained} == trained
    trials = _trials(runs.parent / "study.db")
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    recorded = [t for t in trials if t.params["toy_lr"] == "0.001"]
    assert sorted(t.user_attrs["mmd2"] for t in recorded) == sorted(
        json.loads((runs / f"toy_lr=0.001_seed{s}" / "summary.json").read_text())["final"]["values"]["mmd2"] for s in (0, 1))


def test_only_builds_a_grid_study_value_by_value(toy_specs, tmp_path):
    """--only without --run-cells: the study holds (and its table shows) only the chosen values' cells; a later call
    adds other values to the same storage, with fewer seeds if asked."""
    toy_specs(rounds=4, eval_every=2)
    res = str(tmp_path / "res")
    out = tmp_path / "res" / "toy_study-smoke"
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.001", "--seeds", "2", "--results-dir", res])
    trials = _trials(out / "study.db")
    assert sorted(study_spec.cell_key(t.params) for t in trials) == [f"toy_lr=0.001_seed{s}" for s in range(2)]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    variants = pd.read_csv(out / "table.csv").query("source == 'measured (this study)'")
    assert list(variants.variant) == ["toy_lr=0.001"] and (variants.n_seeds == 2).all()
    with pytest.raises(SystemExit, match="--only 9: not a value"):
        study_mod.main(["toy_study", "--budget", "smoke", "--only", "9", "--results-dir", res])
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.0001", "--seeds", "1", "--results-dir", res])
    trials = _trials(out / "study.db")
    assert sorted(study_spec.cell_key(t.params) for t in trials) == (
        ["toy_lr=0.0001_seed0"] + [f"toy_lr=0.001_seed{s}" for s in range(2)])
    variants = pd.read_csv(out / "table.csv").query("source == 'measured (this study)'").set_index("variant")
    assert variants.n_seeds.to_dict() == {"toy_lr=0.001": 2, "toy_lr=0.0001": 1}


def test_only_trains_its_own_cells_and_leaves_other_queued_cells_waiting(toy_specs, tmp_path):
    """A study built value by value can hold another value's cells still queued (an earlier --only call that was
    stopped); a later --only call records and trains its own cells and none of those."""
    toy_specs(rounds=4, eval_every=2)
    res = tmp_path / "res"
    spec, out = load_study("toy_study"), res / "toy_study-smoke"
    study_mod.main(["toy_study", "--budget", "smoke", "--run-cells", "--only", "0.003", "--seeds", "1", "--results-dir", str(res)])
    # queued first, as the stopped earlier call left them: 0.001 (untrained) and 0.003 (trained, not recorded)
    study_storage.create_or_load(spec, "smoke", 1, f"sqlite:///{out / 'study.db'}", 60, 600, None, ("0.001", "0.003"))
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.0001", "--results-dir", str(res)])
    states = {study_spec.cell_key(t.system_attrs["fixed_params"]): t.state for t in _trials(out / "study.db")}
    assert states == {"toy_lr=0.001_seed0": TrialState.WAITING, "toy_lr=0.003_seed0": TrialState.WAITING,
                      "toy_lr=0.0001_seed0": TrialState.COMPLETE}
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["toy_lr=0.0001_seed0", "toy_lr=0.003_seed0"]


def test_widened_choices_keep_the_stored_order_and_append_new_values():
    from harness.study.growth import grown_params, widened_choices

    stored = {"fix": ("a", "b", "dropped"), "seed": (0, 1)}
    widened = widened_choices(stored, {"fix": ["new", "a", "b"], "seed": [0, 1, 2], "other": ["x"]})
    assert widened == {"fix": ("a", "b", "dropped", "new"), "seed": (0, 1, 2), "other": ("x",)}
    assert grown_params(stored, widened) == {"fix": ("new",), "seed": (2,)}
    assert grown_params(stored, widened_choices(stored, {"fix": ["b", "a"], "seed": [0]})) == {}


def test_a_grid_study_grows_when_its_axis_gains_a_value_or_more_seeds(toy_specs, tmp_path):
    """Optuna refuses a categorical choice list that differs from the stored one, so a value added to a study's axis
    (or more seeds) used to fail every later trial. The study is rebuilt with the wider choices: its finished
    trials keep their values, curves, attributes and times, and the new cells train. A call asking for fewer
    seeds than are queued trains only its own; a growth killed part-way is undone by the next call."""
    root = toy_specs(rounds=4, eval_every=2)
    axis_file = root / "ablations" / "toy_lr.toml"
    axis_file.write_text(TOY_AXIS.replace("values = [1e-3, 3e-3, 1e-4]", "values = [1e-3, 3e-3]"))
    res = tmp_path / "res"
    out, url = res / "toy_study-smoke", f"sqlite:///{res / 'toy_study-smoke' / 'study.db'}"
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.001", "--seeds", "1", "--results-dir", str(res)])
    (before,) = _trials(out / "study.db")
    axis_file.write_text(TOY_AXIS)  # the axis gains 1e-4
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.0001", "--seeds", "2", "--results-dir", str(res)])
    trials = {study_spec.cell_key(t.params): t for t in _trials(out / "study.db")}
    assert sorted(trials) == ["toy_lr=0.0001_seed0", "toy_lr=0.0001_seed1", "toy_lr=0.001_seed0"]
    assert all(t.state == TrialState.COMPLETE for t in trials.values())
    after = trials["toy_lr=0.001_seed0"]
    assert (after.value, after.user_attrs, after.intermediate_values, after.datetime_start, after.datetime_complete) == (
        before.value, before.user_attrs, before.intermediate_values, before.datetime_start, before.datetime_complete)
    for t in trials.values():
        assert t.distributions["toy_lr"].choices == before.distributions["toy_lr"].choices + ("0.0001",)
        assert t.distributions["seed"].choices == (0, 1)
    study = optuna.load_study(study_name="toy_study", storage=url)
    assert study.user_attrs["seeds"] == 2 and study.user_attrs["choices"]["seed"] == [0, 1]
    # --seeds 1 below the study's 2: the queued seed-1 cell of 0.003 is left waiting
    study_storage.create_or_load(load_study("toy_study"), "smoke", 2, url, 60, 600, None, ("0.003",))
    study_mod.main(["toy_study", "--budget", "smoke", "--only", "0.003", "--seeds", "1", "--results-dir", str(res)])
    states = {study_spec.cell_key(t.system_attrs.get("fixed_params") or t.params): t.state for t in _trials(out / "study.db")}
    assert (states["toy_lr=0.003_seed0"], states["toy_lr=0.003_seed1"]) == (TrialState.COMPLETE, TrialState.WAITING)
    # a growth killed after deleting the study: the next call restores the backup, then grows it
    from harness.study.growth import BACKUP_SUFFIX

    held = sorted((t.number, t.state, t.value) for t in _trials(out / "study.db"))
    optuna.copy_study(from_study_name="toy_study", from_storage=url, to_storage=url,
                      to_study_name="toy_study" + BACKUP_SUFFIX)
    optuna.delete_study(study_name="toy_study", storage=url)
    study = study_storage.create_or_load(load_study("toy_study"), "smoke", 3, url, 60, 600, None, ("0.003",))
    assert sorted((t.number, t.state, t.value) for t in study.get_trials() if t.number < len(held)) == held
    assert study.user_attrs["choices"]["seed"] == [0, 1, 2]
    assert optuna.get_all_study_names(storage=url) == ["toy_study"]


def test_smoke_study_writes_every_output_and_report_reproduces_the_table(toy_specs, tmp_path):
    toy_specs()
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--threads", "1"])
    out = tmp_path / "res" / "toy_study-smoke"
    for name in ("study.db", "table.csv", "table.md", "trials.csv", "curves.png", "diagnostics.png", "samples.png", "manifest.json"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "table.csv")
    variants = table[table.source == "measured (this study)"]
    assert len(variants) == 3 and (variants.n_seeds == 2).all() and (table.budget == "smoke").all()
    assert "SMOKE" in (out / "table.md").read_text()
    # each variant against the first (reference) variant, paired per seed
    tr = pd.read_csv(out / "trials.csv")
    ref = tr[tr.variant == "toy_lr=0.001"].set_index("seed").mmd2
    other = tr[tr.variant == "toy_lr=0.0001"].set_index("seed").mmd2
    row = variants.set_index("variant").loc["toy_lr=0.0001"]
    from harness.evaluation.verdicts import t_interval

    mean, lo, hi = t_interval(list(other - ref))  # 95% t-interval of the per-seed differences
    assert row.r_mmd2 == pytest.approx(mean) and (row.r_mmd2_lo, row.r_mmd2_hi) == (pytest.approx(lo), pytest.approx(hi))
    assert variants.set_index("variant").loc["toy_lr=0.001"].verdict_vs_ref == "(reference variant)"
    trials = _trials(out / "study.db")
    assert sorted(study_spec.cell_key(t.params) for t in trials) == sorted(study_spec.cell_key(c) for c in grid_cells(load_study("toy_study"), 2))
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert all(Path(t.user_attrs["run_dir"]).is_dir() and "mmd2" in t.user_attrs for t in done)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["budget"] == "smoke" and "git_commit" in manifest
    assert [r["trials_finished"] for r in manifest["study_runs"]] == [6]
    # the same command again: every trial is finished, so no file is rewritten (the manifest included)
    files = {p: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != "study.db"}
    stored = _dump(out / "study.db")  # its rows, not its bytes: sqlite may rewrite pages without changing a row
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--threads", "1"])
    assert {p: p.read_bytes() for p in files} == files
    assert _dump(out / "study.db") == stored
    before = (out / "table.csv").read_text()
    shutil.rmtree(out / "runs")  # --report reads the storage, not the run directories, for the table
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--report"])
    assert (out / "table.csv").read_text() == before
    assert len(json.loads((out / "manifest.json").read_text())["study_runs"]) == 1  # a redraw is not a run


def _dump(db: Path) -> str:
    import sqlite3

    with closing(sqlite3.connect(db)) as con:
        return "\n".join(con.iterdump())


def test_cell_check_tolerates_a_trial_still_suggesting_its_params(toy_specs, tmp_path):
    """Another worker's running trial whose params are half-suggested (the axis but not yet the seed) was read
    as a cell and failed this worker's trial with KeyError: 'seed' (the two-worker test's intermittent failure)."""
    toy_specs()
    spec = load_study("toy_study")
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="toy_study")
    for cell in grid_cells(spec, 2):
        study.enqueue_trial(cell)
    busy = study.ask()  # popped the first cell; suggests its axis but not yet its seed
    busy.suggest_categorical("toy_lr", list(spec.axes[0].values))
    assert "seed" not in busy.params
    mine = study.ask()
    params = {"toy_lr": mine.suggest_categorical("toy_lr", list(spec.axes[0].values)),
              "seed": mine.suggest_categorical("seed", [0, 1])}
    assert not study_trials._cell_taken(mine, params)
    first = grid_cells(spec, 2)[0]
    assert study_trials._cell_taken(mine, first)  # the half-suggested trial still owns its enqueued cell
    assert study_trials.requeue_lost_cells(study, spec, 2) == 0


def test_tpe_study_does_not_search_over_the_seed(toy_specs, tmp_path):
    """A TPE study assigns seeds round-robin (a searchable seed lets TPE chase evaluation noise) and writes the
    importance of its real axes."""
    root = toy_specs()
    (root / "ablations" / "toy_lr_float.toml").write_text(
        'name = "toy_lr_float"\nkind = "float"\nfield = "lr_gen"\nlow = 1e-4\nhigh = 3e-3\nlog = true\n')
    spec_text = TOY_STUDY.format(rounds=20, eval_every=10).replace('axes = ["toy_lr"]', 'axes = ["toy_lr_float"]')
    (root / "studies" / "toy_tpe.toml").write_text(spec_text.replace('sampler = "grid"', 'sampler = "tpe"')
                                                   .replace('name = "toy_study"', 'name = "toy_tpe"'))
    study_mod.main(["toy_tpe", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--threads", "1"])
    st = optuna.load_study(study_name="toy_tpe", storage=f"sqlite:///{tmp_path / 'res' / 'toy_tpe-smoke' / 'study.db'}")
    done = [t for t in st.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and all(set(t.params) == {"toy_lr_float"} for t in done)
    assert [t.user_attrs["seed"] for t in done] == [0, 1, 0, 1]
    trials = pd.read_csv(tmp_path / "res" / "toy_tpe-smoke" / "trials.csv")
    assert sorted(trials.seed) == [0, 0, 1, 1]
    assert "seed" not in (tmp_path / "res" / "toy_tpe-smoke" / "importance.csv").read_text()


def test_two_workers_share_one_sqlite_study_without_duplicates(toy_specs, tmp_path):
    toy_specs()
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--workers", "2"])
    trials = _trials(tmp_path / "res" / "toy_study-smoke" / "study.db")
    keys = [study_spec.cell_key(t.params) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(keys) == 6 and len(set(keys)) == 6  # every cell exactly once, none lost


def test_pruner_override_prunes_poor_cells_early_and_is_stored_beside_the_canonical_study(toy_specs, tmp_path):
    """--pruner median on a spec without pruning: a separate study directory; the slow-lr cells, worse than the
    median at the first evaluation, stop there and are recorded as pruned with their reason and rounds."""
    toy_specs(rounds=30, eval_every=10)
    res = tmp_path / "res"
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(res), "--threads", "1", "--pruner", "median"])
    out = res / "toy_study-smoke-pruner-median"
    assert not (res / "toy_study-smoke").exists()
    assert json.loads((out / "manifest.json").read_text())["config"]["pruner"] == "median"
    trials = _trials(out / "study.db")
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["rounds_done"] < 30 and "above the median" in t.user_attrs["reason"] for t in pruned)
    assert all(t.user_attrs["rounds_done"] == 30 for t in trials if t.state == TrialState.COMPLETE)
    table = pd.read_csv(out / "table.csv")
    assert table.n_pruned.sum() == len(pruned)
    # naming the spec's own pruner is the canonical study
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(res), "--threads", "1", "--pruner", "none",
                    "--only", "0.001", "--seeds", "1"])
    assert (res / "toy_study-smoke" / "study.db").is_file()


def test_sqlite_storage_takes_the_write_lock_when_a_transaction_begins(tmp_path):
    """Workers' transactions begin IMMEDIATE: while one is open (even one that only read so far), another
    writer cannot start, so the two queue on the busy timeout instead of deadlocking on a lock upgrade."""
    import sqlite3

    from sqlalchemy import text

    db = tmp_path / "s.db"
    storage = study_storage.make_storage(f"sqlite:///{db}", heartbeat=10, grace=60)
    with storage.engine.connect() as conn, conn.begin():
        conn.execute(text("SELECT count(*) FROM studies")).scalar()
        other = sqlite3.connect(db, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free again once the transaction ended
    other.execute("ROLLBACK")
    other.close()


def _study_cmd(res):
    return [sys.executable, "-m", "harness.study", "toy_study", "--budget", "smoke", "--results-dir", str(res),
            "--threads", "1", "--heartbeat", "1", "--grace", "3"]


def test_study_survives_sigkill(toy_specs, tmp_path):
    """SIGKILL mid-trial, rerun: finished trials kept, the interrupted one failed and re-run (resuming its
    checkpoint), no cell duplicated in the storage or the table."""
    toy_specs(rounds=300, eval_every=100)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_PLAIN_PROGRESS": "1"}
    res = tmp_path / "res"
    db = res / "toy_study-smoke" / "study.db"
    cmd = _study_cmd(res) + ["--seeds", "1"]  # 3 cells: one finished, one killed mid-run, one not yet started
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for one finished trial and a checkpoint inside the next one
        time.sleep(0.5)
        try:
            trials = _trials(db)
        except Exception:
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if any(t.state == TrialState.COMPLETE for t in trials) and running:
            run_dir = running[0].user_attrs.get("run_dir")
            ckpt = Path(run_dir) / "checkpoint.pt" if run_dir else None
            try:
                if ckpt and ckpt.is_file() and 50 <= torch.load(ckpt, weights_only=False)["_meta"]["step"] < 250:
                    break
            except (EOFError, RuntimeError):  # caught mid-write
                pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = [t for t in _trials(db) if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    killed_dir = Path(killed[0].user_attrs["run_dir"])
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
    trials = _trials(db)
    complete = [study_spec.cell_key(t.params) for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len(set(complete)) == 3
    assert trials[killed[0].number].state == TrialState.FAIL
    assert "resumed at round" in (killed_dir / "log.txt").read_text()  # the re-run continued the checkpoint
    table = pd.read_csv(res / "toy_study-smoke" / "table.csv")
    assert (table[table.source == "measured (this study)"].n_seeds == 1).all()


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("mode", [[], ["--run-cells"]], ids=["study", "run-cells"])
def test_workers_do_not_outlive_a_killed_coordinator(toy_specs, tmp_path, mode):
    """SIGKILL the command that spawned 2 workers (a study's, or --run-cells' pool): the workers stop too (no orphan
    keeps computing unseen)."""
    toy_specs(rounds=3000, eval_every=1000)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HARNESS_PLAIN_PROGRESS": "1"}
    proc = subprocess.Popen(_study_cmd(tmp_path / "res") + ["--workers", "2"] + mode, env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.time() + 120, []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = [k for k in _children(proc.pid) if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text(errors="ignore")]
    assert len(workers) == 2
    time.sleep(3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.5)
    alive = [w for w in workers if _alive(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive


def _report_then_write(parent_pid: int, folder: str) -> None:
    study_workers._exit_with_parent(parent_pid, poll_s=0.1)
    (Path(folder) / "ready").write_text("")
    time.sleep(2)
    (Path(folder) / "alive").write_text("alive")


def test_a_worker_outlives_the_thread_that_started_it(tmp_path):
    """A pool's replacement workers are started by its handler thread, which exits at shutdown; a worker tied to
    that thread's life (Linux's PR_SET_PDEATHSIG) was killed while it could hold the pool's result-queue lock, and
    --run-cells then hung after its last cell. Only the coordinator process's death may stop a worker."""
    import multiprocessing as mp
    import threading

    proc = mp.get_context("spawn").Process(target=_report_then_write, args=(os.getpid(), str(tmp_path)))

    def start_and_wait_until_ready():
        proc.start()
        deadline = time.time() + 120
        while not (tmp_path / "ready").exists() and time.time() < deadline:
            time.sleep(0.05)

    starter = threading.Thread(target=start_and_wait_until_ready)
    starter.start()
    starter.join()  # the thread that started the worker ends while the worker runs
    proc.join(120)
    assert (tmp_path / "ready").exists() and proc.exitcode == 0 and (tmp_path / "alive").read_text() == "alive"


def _pg_bin():
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return found[-1].parent if found else None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(_pg_bin() is None, reason="PostgreSQL server binaries not installed (.ci/run installs them)")
def test_postgres_storage_with_two_workers(toy_specs, tmp_path):
    pytest.importorskip("psycopg")
    toy_specs()
    import tempfile

    bin_dir, port = _pg_bin(), _free_port()  # a fixed port fails whenever anything else holds it
    data = Path(tempfile.mkdtemp(prefix="harness-pg-"))  # outside pytest's root-only tmp tree
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # postgres refuses to run as root
    if as_postgres:
        shutil.chown(data, "postgres")
    subprocess.run(as_postgres + [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "harness"], check=True, capture_output=True)
    started = subprocess.run(as_postgres + [str(bin_dir / "pg_ctl"), "-D", str(data), "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                                            "-l", str(data / "log"), "-w", "start"], capture_output=True)
    if started.returncode:
        log = (data / "log").read_text() if (data / "log").is_file() else ""
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"the PostgreSQL server did not start: {log[-600:]}")
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "harness", "studies"], check=True)
        url = f"postgresql://harness@127.0.0.1:{port}/studies"
        study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(tmp_path / "res"), "--storage", url, "--workers", "2"])
        st = optuna.load_study(study_name="toy_study", storage=url)
        keys = [study_spec.cell_key(t.params) for t in st.get_trials() if t.state == TrialState.COMPLETE and not t.user_attrs.get("surplus")]
        assert len(keys) == 6 and len(set(keys)) == 6
        assert (tmp_path / "res" / "toy_study-smoke" / "table.csv").is_file()
    finally:
        subprocess.run(as_postgres + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_each_budget_has_its_own_study_directory():
    """cpu and gpu budgets train the same cells at different rounds and batch sizes: one directory would make a cell
    of one budget meet the other's run directory (refused as a different config, or recorded as if it were its own)."""
    dirs = {b: study_storage.study_dir(Path("res"), "lr_ladder", b) for b in ("cpu", "gpu", "smoke")}
    assert dirs == {"cpu": Path("res/lr_ladder"), "gpu": Path("res/lr_ladder-gpu"), "smoke": Path("res/lr_ladder-smoke")}
    assert study_storage.study_dir(Path("res"), "lr_sweep", "cpu", "none") == Path("res/lr_sweep-pruner-none")


def test_finished_cells_are_recorded_before_any_worker_trains(toy_specs, tmp_path):
    """Workers pop waiting trials in order, so cells trained by --run-cells and queued behind untrained ones would
    wait for all of those; the coordinator records them first, and only them."""
    toy_specs(rounds=6, eval_every=3)
    res = tmp_path / "res"
    study_mod.main(["toy_study", "--budget", "smoke", "--run-cells", "--only", "0.0001", "--results-dir", str(res)])
    spec, out = load_study("toy_study"), res / "toy_study-smoke"
    study = study_storage.create_or_load(spec, "smoke", None, f"sqlite:///{out / 'study.db'}", 60, 600, 4)
    assert study_trials.record_finished_cells(study, spec, "smoke", 2, out) == 2
    cells = {(t.system_attrs["fixed_params"]["toy_lr"], t.system_attrs["fixed_params"]["seed"]): t for t in study.get_trials()}
    assert len(cells) == 6  # the 0.0001 cells come last in the grid's order
    for (lr, seed), t in cells.items():
        if lr == "0.0001":
            summary = json.loads((out / "runs" / f"toy_lr=0.0001_seed{seed}" / "summary.json").read_text())
            assert t.state == TrialState.COMPLETE and t.value == summary["final"]["values"]["mmd2"]
        else:
            assert t.state == TrialState.WAITING and not (out / "runs" / f"toy_lr={lr}_seed{seed}").exists()
    assert study_trials.record_finished_cells(study, spec, "smoke", 2, out) == 0  # nothing left to record


def test_the_study_command_prints_the_compact_table_and_the_wide_one_on_request(toy_smoke_results, toy_specs, capsys):
    toy_specs(rounds=10, eval_every=5)  # the specs the shared smoke study was made from
    args = ["toy_study", "--budget", "smoke", "--results-dir", str(toy_smoke_results), "--report"]
    study_mod.main(args)
    compact = capsys.readouterr().out
    study_mod.main(args + ["--wide"])
    wide = capsys.readouterr().out
    table = compact[compact.index("toy_study [SMOKE budget"):]
    assert max(len(line) for line in table.splitlines()) <= 100
    assert "full tables" in table and str(toy_smoke_results / "toy_study-smoke" / "table.md") in table
    assert "toy_lr=" in table and "verdict vs start" not in table
    assert "verdict vs start" in wide and "full tables" not in wide
