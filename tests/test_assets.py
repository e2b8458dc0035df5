"""The shipped pretrained assets: present, loadable without the dataset, documented, small."""

import pytest
import torch

from harness.testbed import assets
from harness.method import teachers
from harness.method.teachers import default_sampler_kwargs

SHIPPED = ["teacher-edm", "teacher-ddpm-huber", "teacher-ddpm-mse", "gan-weak", "gan-strong", "gan-wide", "evaluator", "feature-bank"]


def test_every_asset_is_shipped_with_a_full_manifest_entry():
    manifest = assets.read_manifest()
    for name in SHIPPED:
        assert (assets.ASSET_DIR / f"{name}.pt").is_file(), name
        entry = manifest[name]
        for key in ("command", "config", "seed", "git_commit", "data_checksum", "device", "wall_s", "parameter_count", "metrics"):
            assert key in entry, (name, key)
        assert entry["command"].startswith("python -m harness.pretrain")
    assert manifest["evaluator"]["metrics"]["test_accuracy"] > 0.85
    assert manifest["evaluator"]["metrics"]["n_test"] == 10_000


def test_shipped_total_is_under_40_mb():
    total = sum(p.stat().st_size for p in assets.ASSET_DIR.glob("*.pt"))
    assert total < 40e6, total


def test_assets_are_plain_state_dicts():
    for name in SHIPPED:  # weights_only=True refuses pickled code
        raw = torch.load(assets.ASSET_DIR / f"{name}.pt", weights_only=True)
        assert set(raw) == {"kind", "config", "state_dict"}


@pytest.mark.parametrize("name", ["edm", "ddpm-huber", "ddpm-mse"])
def test_teachers_load_and_sample(name):
    teacher, cfg = teachers.load_teacher(name)
    assert not teacher.training
    x = teacher.sample(torch.randn(2, 1, 28, 28), **{**default_sampler_kwargs(teacher), "steps": 4})
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    assert cfg["teacher"]["kind"] == ("edm" if name == "edm" else "ddpm")
    if name.startswith("ddpm"):
        assert teacher.loss_type == name.split("-")[1] and teacher.num_steps == 2000


@pytest.mark.parametrize("name", ["gan-weak", "gan-strong", "gan-wide"])
def test_gans_load_and_generate(name):
    g, cfg = assets.load_network(name)
    x = g(torch.randn(4, cfg["net"]["latent_dim"]))
    assert x.shape == (4, 1, 28, 28) and x.abs().max() <= 1


def test_missing_asset_is_a_clear_error(tmp_path):
    with pytest.raises(assets.AssetNotFoundError, match="python -m harness.pretrain"):
        teachers.load_teacher("edm", tmp_path)
