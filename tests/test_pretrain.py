"""Tiny training smoke runs per model and kill-and-resume of the pretrain loop (real FashionMNIST)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.testbed import assets, pretrain
from harness.method import teachers
from tests.conftest import requires_data

pytestmark = requires_data
ROOT = Path(__file__).resolve().parent.parent


def _run(args, tmp_path):
    pretrain.main(args + ["--asset-dir", str(tmp_path / "assets"), "--run-dir", str(tmp_path / "runs"),
                          "--eval-n", "0", "--batch-size", "16"])


@pytest.mark.parametrize("job", [["teacher", "edm"], ["teacher", "ddpm-huber"], ["gan", "weak"], ["gan", "wide"], ["evaluator"]])
def test_each_job_trains_and_writes_a_loadable_asset(job, tmp_path):
    _run(job + ["--max-steps", "3"], tmp_path)
    manifest = assets.read_manifest(tmp_path / "assets")
    name = {"teacher": f"teacher-{job[-1]}", "gan": f"gan-{job[-1]}", "evaluator": "evaluator"}[job[0]]
    entry = manifest[name]
    for key in ("command", "config", "seed", "git_commit", "data_checksum", "device", "wall_s", "parameter_count", "metrics"):
        assert key in entry, key
    assert entry["config"]["steps"] == 3
    if job[0] == "teacher":
        teacher, _ = teachers.load_teacher(job[1], tmp_path / "assets")
        x = torch.randn(2, 1, 28, 28)
        assert teacher.denoise(x, torch.tensor([0.5, 2.0])).shape == x.shape
    else:
        net, _ = assets.load_network(name, tmp_path / "assets")
        assert sum(p.numel() for p in net.parameters()) == entry["parameter_count"]
    if job[0] == "gan":  # the preset's width is the network's (the wide GAN: twice the weak one's channels)
        width = pretrain.GAN_PRESETS[job[1]]["width"]
        assert entry["config"]["extra"]["generator"]["width"] == width and net.width == width
    if job[0] == "evaluator":
        bank = assets.load_feature_bank(tmp_path / "assets")
        assert bank["features"].shape == (10_000, 128) and bank["labels"].shape == (10_000,)


def _cli(tmp_path, run_dir, steps):
    return [sys.executable, "-m", "harness.pretrain", "teacher", "edm", "--max-steps", str(steps), "--batch-size", "16",
            "--eval-n", "0", "--ckpt-every", "0", "--threads", "1", "--asset-dir", str(tmp_path / f"assets-{run_dir}"),
            "--run-dir", str(tmp_path / run_dir)]


def test_kill_and_resume_gives_identical_weights(tmp_path):
    """SIGKILL mid-run, rerun the same command: it resumes from its checkpoint and ends bit-identical to
    an uninterrupted run (weights, EMA, optimiser, data order and dropout RNG are all checkpointed)."""
    steps = 30
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_cli(tmp_path, "straight", steps), check=True, env=env, cwd=ROOT, capture_output=True)

    proc = subprocess.Popen(_cli(tmp_path, "killed", steps), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = tmp_path / "killed" / "teacher-edm.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline:
        if ckpt.is_file() and torch.load(ckpt, weights_only=False)["_meta"]["step"] >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=False)["_meta"]["step"]
    assert 5 <= killed_at < steps, "the run must be interrupted midway for this test to mean anything"

    out = subprocess.run(_cli(tmp_path, "killed", steps), check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    assert f"resuming from step {killed_at}" in out.stdout
    a = torch.load(tmp_path / "assets-straight" / "teacher-edm.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "assets-killed" / "teacher-edm.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_bad_names_give_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="teacher name must be one of"):
        pretrain.main(["teacher", "vp"])
    with pytest.raises(SystemExit, match="gan name must be one of"):
        pretrain.main(["gan", "medium"])
