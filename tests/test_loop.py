"""The DI loop end to end on the exact-score toy (no assets), plus a smoke run of each image setting."""

import csv
import math
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.testbed import assets
from harness.method.overrides import apply_overrides
from harness.method.presets import preset
from harness.method.loop import train
from harness.run import main as run_main

ROOT = Path(__file__).resolve().parent.parent


def toy(*sets):
    # the start/final evaluation on 400 samples unless a test asks for more (the preset's 4,000 cost seconds each)
    return apply_overrides(preset("toy"), ["threads=1", "final_eval_n=400", *sets])


def test_toy_converges_with_the_exact_teacher(tmp_path):
    """With an analytic teacher the reference update (aux from scratch + warm-up) moves a random MLP
    generator onto all 8 modes: MMD^2 to the data falls > 20x and most samples sit inside a mode."""
    s = train(toy("rounds=500", "eval_every=0", "eval_n=2000", "final_eval_n=2000"), tmp_path)
    start, final = s["start"]["values"], s["final"]["values"]
    assert s["status"] == "completed"
    assert start["modes_covered"] == 0 and final["modes_covered"] == 8
    assert final["in_mode_fraction"] > 0.75
    assert final["mmd2"] < start["mmd2"] / 20


def test_update_ratio_counts_optimiser_steps(tmp_path):
    train(toy("rounds=3", "aux_steps=3", "gen_steps=2", "aux_warmup_steps=4", "eval_every=0", "eval_n=100"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert int(ckpt["opt_aux"]["state"][0]["step"]) == 4 + 3 * 3
    assert int(ckpt["opt_gen"]["state"][0]["step"]) == 3 * 2
    rows = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("decay,factors", [("none", [1, 1, 1, 1]), ("linear", [1, 0.75, 0.5, 0.25]),
                                            ("cosine", [1, 0.8535534, 0.5, 0.1464466])])
def test_aux_lr_decay_sets_the_aux_learning_rate_of_each_round(tmp_path, decay, factors):
    train(toy("rounds=4", "eval_every=0", "eval_n=100", "lr_aux=0.002", f"aux_lr_decay={decay}"), tmp_path)
    rows = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert [float(r["lr_aux"]) for r in rows] == pytest.approx([0.002 * f for f in factors], rel=1e-6)


def test_first_ema_update_copies_the_generator(tmp_path):
    """beta comes from the images seen before the round (0 at round 0), as in the release."""
    train(toy("rounds=1", "eval_every=0", "eval_n=100", "aux_warmup_steps=0"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    for k in ckpt["G"]:
        assert torch.equal(ckpt["G"][k], ckpt["G_ema"][k]), k


def test_eval_generator_changes_what_is_scored_and_nothing_else(tmp_path):
    """raw vs ema: the same training (identical rounds.csv), a different final evaluation (the EMA lags G)."""
    runs = {}
    for which in ("ema", "raw"):
        s = train(toy("rounds=20", "eval_every=0", "eval_n=300", "final_eval_n=300", "ema_mu=0.9",
                      f"eval_generator={which}"), tmp_path / which)
        rounds = [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader((tmp_path / which / "rounds.csv").open())]
        runs[which] = (s, rounds)
    (ema, ema_rounds), (raw, raw_rounds) = runs["ema"], runs["raw"]
    assert ema_rounds == raw_rounds
    assert ema["start"]["values"] == raw["start"]["values"]  # before any step G and its EMA are the same network
    assert ema["final"]["values"]["mmd2"] != raw["final"]["values"]["mmd2"]


def test_divergence_stops_the_run_with_its_reason(tmp_path):
    s = train(toy("rounds=30", "eval_every=0", "eval_n=100", "aux_warmup_steps=0", "lr_gen=1e30"), tmp_path)
    assert s["status"] == "diverged" and "non-finite" in s["reason"] and s["rounds_done"] < 30
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "diverged"


def test_outputs_and_config_guard(tmp_path):
    cfg = toy("rounds=20", "eval_every=10", "eval_n=200", "aux_warmup_steps=0")
    train(cfg, tmp_path)
    for name in ("config.json", "rounds.csv", "evals.csv", "summary.json", "log.txt", "checkpoint.pt"):
        assert (tmp_path / name).is_file(), name
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["round_000000.png", "round_000010.png", "round_000020.png"]
    assert [int(r["round"]) for r in csv.DictReader((tmp_path / "evals.csv").open())] == [0, 10, 20]
    with pytest.raises(ValueError, match="different config"):
        train(toy("rounds=21", "eval_every=10", "eval_n=200", "aux_warmup_steps=0"), tmp_path)



def test_a_finished_run_is_returned_not_trained_again_even_under_other_speed_settings(tmp_path):
    """A finished run directory (e.g. trained by study --run-cells on another machine with other thread counts)
    is returned as it is: no round is redone and none of its files changes."""
    first = train(toy("rounds=5", "eval_every=0", "eval_n=100", "aux_warmup_steps=0"), tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    again = train(toy("rounds=5", "eval_every=0", "eval_n=100", "aux_warmup_steps=0", "threads=2", "ckpt_every_s=5"), tmp_path)
    assert again == json.loads(json.dumps(first))  # the stored summary
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def _cli(out, rounds=200):
    return [sys.executable, "-m", "harness.run", "--preset", "toy", "--rounds", str(rounds), "--out", str(out),
            "--set", "ckpt_every_s=0", "--set", "eval_every=100", "--set", "eval_n=300", "--set", "threads=1",
            "--set", "aux_warmup_steps=10"]


def test_run_resumes_after_kill_identically(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_cli(tmp_path / "straight"), check=True, env=env, capture_output=True, cwd=ROOT)
    proc = subprocess.Popen(_cli(tmp_path / "killed"), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if ckpt.is_file() and torch.load(ckpt, weights_only=False)["_meta"]["step"] >= 120:
                break
        except (EOFError, RuntimeError):  # caught mid-rename
            pass
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["_meta"]["step"]
    assert 100 < killed_at < 200
    subprocess.run(_cli(tmp_path / "killed"), check=True, env=env, capture_output=True, cwd=ROOT)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)
    for net in ("G", "G_ema", "aux"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), (net, k)
    rounds = [int(r["round"]) for r in csv.DictReader((tmp_path / "killed" / "rounds.csv").open())]
    assert rounds == list(range(1, 201))  # nothing lost, nothing duplicated
    evals = [int(r["round"]) for r in csv.DictReader((tmp_path / "killed" / "evals.csv").open())]
    assert evals == [0, 100, 200]
    s_a = json.loads((tmp_path / "straight" / "summary.json").read_text())
    s_b = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert s_a["final"] == s_b["final"] and s_a["start"] == s_b["start"]


def test_run_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit, match="unknown preset 'fast'; available"):
        run_main(["--preset", "fast"])
    with pytest.raises(SystemExit, match="weighting must be one of"):
        run_main(["--preset", "toy", "--set", "weighting=sqrt"])
    with pytest.raises(SystemExit, match="expects key=value"):
        run_main(["--preset", "toy", "--set", "lr_gen"])
    run_main(["--preset", "seed-report", "--dry-run"])
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["teacher"] == "ddpm-huber" and cfg["generator"] == "gan-weak"


def test_missing_assets_give_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="asset 'teacher-edm' not found"):
        run_main(["--preset", "reference-onestep", "--rounds", "1", "--out", str(tmp_path / "x"), "--asset-dir", str(tmp_path)])


@pytest.mark.parametrize("preset_name", ["reference-onestep", "reference-gan", "seed-report"])
def test_image_presets_smoke(preset_name, tmp_path):
    """Two rounds at batch 8 on the shipped assets: every image setting builds, steps and evaluates."""
    if not (assets.ASSET_DIR / "teacher-ddpm-huber.pt").is_file():
        pytest.fail("shipped assets missing: run `python -m harness.pretrain all`")
    cfg = apply_overrides(preset(preset_name), ["rounds=2", "batch_size=8", "eval_every=0", "eval_n=64",
                                                "final_eval_n=96", "threads=1"])
    s = train(cfg, tmp_path)
    assert s["status"] == "completed"
    # every registered metric in every feature space, on final_eval_n samples, with half-samples for intervals
    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import HALF_SAMPLES, METRICS

    expected = {f"{m}_{sp}" for m in METRICS for sp in FEATURE_SPACES}
    for which in ("start", "final"):
        assert s[which]["n"] == 96 and set(s[which]["values"]) == expected
        assert all(len(h) == HALF_SAMPLES for h in s[which]["halves"].values())
    assert set(s["change"]) >= {"kid_vgg", "recall_resnet", "class_tv_vgg"} and "1 seed" in s["verdict"]
    curve = list(csv.DictReader((tmp_path / "evals.csv").open()))
    assert [r["round"] for r in curve] == ["0", "2"] and curve[0]["n"] == "64"
    rows = list(csv.DictReader((tmp_path / "rounds.csv").open()))
    assert len(rows) == 2 and float(rows[0]["teacher_loss"]) > 0
    assert (tmp_path / "strip.png").is_file()  # the grids over training, side by side


def test_toy_mode_mass_metrics_on_known_samples():
    """The target's own samples sit at its weights (TV near the sampling floor, every ratio near 1); a generator
    that drops the largest mode of the ramp misses exactly that mode's weight (TV = 8/36)."""
    from harness.testbed.toy import GMMTeacher, toy_metrics

    teacher = GMMTeacher(weights="ramp")
    g = torch.Generator().manual_seed(0)
    own = toy_metrics(teacher.sample(20_000, g), teacher)
    assert own["mode_mass_tv"] < 0.02 and own["min_mode_ratio"] > 0.85 and own["mode_mass_tv_floor"] < 0.02
    x = teacher.sample(40_000, g)
    nearest = torch.cdist(x, teacher.means).argmin(1)
    dropped = toy_metrics(x[nearest != 7], teacher)
    assert dropped["mode_mass_tv"] == pytest.approx(8 / 36, abs=0.01) and dropped["min_mode_ratio"] == 0.0
    assert sum(dropped[f"mode_mass_{k}"] for k in range(8)) == pytest.approx(1.0)


@pytest.mark.parametrize("weights,stds", [("equal", "equal"), ("ramp", "ramp")])
def test_toy_denoiser_is_the_exact_score_of_the_mixture(weights, stds):
    """D_p(x, sigma) = x + sigma^2 grad log p_sigma(x), with p_sigma = sum_k pi_k N(mu_k, (s_k^2 + sigma^2) I)
    written out by hand and differentiated by autograd: checks the per-mode normaliser 1 / v_k that unequal widths
    need (with equal widths it cancels in the responsibilities)."""
    from harness.testbed.toy import GMMTeacher

    teacher = GMMTeacher(weights=weights, stds=stds).double()
    g = torch.Generator().manual_seed(1)
    x = (1.3 * torch.randn(64, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    sigma = torch.exp(torch.randn(64, generator=g, dtype=torch.float64) - 1.5)
    v = teacher.stds[None] ** 2 + sigma[:, None] ** 2  # (B, K)
    sq = ((x[:, None, :] - teacher.means[None]) ** 2).sum(-1)
    log_p = torch.logsumexp(teacher.weights.log()[None] - torch.log(2 * math.pi * v) - sq / (2 * v), 1)
    (score,) = torch.autograd.grad(log_p.sum(), x)
    expected = x.detach() + sigma[:, None] ** 2 * score
    assert torch.allclose(teacher.denoise(x.detach(), sigma), expected, atol=1e-10)


def test_toy_mode_widths_ramp_at_equal_mass():
    from harness.testbed.toy import GMMTeacher, toy_metrics

    teacher = GMMTeacher(stds="ramp")
    assert teacher.stds[0] == pytest.approx(0.05) and teacher.stds[-1] == pytest.approx(0.15)
    x = teacher.sample(40_000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(x, teacher.means).argmin(1)
    # ||x - mu_k||^2 / s_k^2 is chi-square with 2 dof, median 2 ln 2 (a median: robust to the broad neighbour's tail)
    spread = torch.stack([x[nearest == k].sub(teacher.means[k]).pow(2).sum(1).median().div(2 * math.log(2)).sqrt()
                          for k in (0, 7)])
    assert spread[0] == pytest.approx(0.05, rel=0.05) and spread[1] == pytest.approx(0.15, rel=0.05)
    assert toy_metrics(x, teacher)["mode_mass_tv"] < 0.02  # each mode's own 4-std radius keeps its samples
    # the narrow mode resolved 4x too wide, at its right mass: fewer samples in-mode, the same masses
    blurred = torch.where((nearest == 0)[:, None], teacher.means[0] + 4 * (x - teacher.means[0]), x)
    m = toy_metrics(blurred, teacher)
    assert m["mode_mass_tv"] < 0.02 and m["in_mode_fraction"] < 0.99


def test_a_run_draws_the_same_stream_whether_or_not_it_is_the_first_in_its_process(tmp_path):
    """A study worker runs many cells in one process. The feature spaces' classifiers are built once per process
    (cached), and building one once drew from the global RNG, so the first cell of a worker trained on another
    random stream than the same cell run later in it (found as long runs that did not repeat their screening
    runs' first 200 rounds for 3 of 5 seeds). Two runs of one config in one fresh cache must write the same rounds."""
    from harness.evaluation import scoring

    if not (assets.ASSET_DIR / "teacher-ddpm-huber.pt").is_file():
        pytest.fail("shipped assets missing: run `python -m harness.pretrain all`")
    cfg = apply_overrides(preset("seed-report"), ["rounds=2", "batch_size=8", "eval_every=0", "eval_n=64",
                                                  "final_eval_n=64", "threads=1", "ckpt_every_s=0"])
    scoring._reference.cache_clear()
    rows = []
    for name in ("first", "second"):
        train(cfg, tmp_path / name)
        with (tmp_path / name / "rounds.csv").open() as f:
            rows.append([{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)])
    assert len(rows[0]) == 2 and rows[0] == rows[1]
