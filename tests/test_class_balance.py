"""Class histograms before and after DI (harness.class_balance): stored by a run, consistent with its class TV,
recomputed from the checkpoint exactly as the run's own evaluation drew them, and drawn as a figure."""

import json

import pytest
import torch

from harness.testbed import assets
from harness.evaluation import class_balance, metrics
from harness.method.overrides import apply_overrides
from harness.method.presets import preset
from harness.evaluation.feature_spaces import FEATURE_SPACES
from harness.method.loop import train


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    if not (assets.ASSET_DIR / "teacher-ddpm-huber.pt").is_file():
        pytest.fail("shipped assets missing: run `python -m harness.pretrain all`")
    out = tmp_path_factory.mktemp("run")
    cfg = apply_overrides(preset("seed-report"), ["rounds=2", "batch_size=8", "eval_every=0", "eval_n=64",
                                                  "final_eval_n=96", "threads=1", "lr_gen=1e-3"])
    train(cfg, out)
    return out


def test_a_run_stores_its_class_histograms_and_they_give_its_class_tv(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    test_shares = class_balance.reference_class_shares()
    for which in ("start", "final"):
        hists = summary[which]["class_hists"]
        assert set(hists) == set(FEATURE_SPACES)
        for space, h in hists.items():
            assert len(h) == 10 and sum(h) == pytest.approx(1.0)
            assert all(abs(v * 96 - round(v * 96)) < 1e-9 for v in h)  # shares of 96 samples
            tv = metrics.class_tv(torch.tensor(h), torch.tensor(test_shares[space]))
            assert tv == pytest.approx(summary[which]["values"][f"class_tv_{space}"])


def test_histograms_are_recomputed_from_the_checkpoint_as_the_run_drew_them(tiny_run, tmp_path):
    stored = class_balance.stored_class_hists(tiny_run)
    summary_path = tiny_run / "summary.json"
    summary = json.loads(summary_path.read_text())
    for which in ("start", "final"):  # an older run: no histograms in its summary
        summary[which].pop("class_hists")
    summary_path.write_text(json.dumps(summary))
    assert class_balance.stored_class_hists(tiny_run) is None
    again = class_balance.class_hists(tiny_run)
    assert again == stored  # same latents, same EMA generator: the same predicted classes
    written = json.loads((tiny_run / "class_hist.json").read_text())
    assert written["final"] == stored["final"] and "git_commit" in written["manifest"]
    assert class_balance.stored_class_hists(tiny_run) == stored  # read back, not recomputed

    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(SystemExit, match="no class histograms stored and no config.json"):
        class_balance.main([str(bare)])


def test_class_shift_figure_is_drawn(tiny_run, tmp_path):
    from harness.testbed.data import CLASSES
    from harness.reporting.plots import class_shift

    h = class_balance.class_hists(tiny_run)
    path = tmp_path / "classes.png"
    class_shift([("a", [h, h]), ("b", [h])], class_balance.reference_class_shares(), list(CLASSES), path, "test",
                {"gan-weak": h["start"]})
    assert path.is_file() and path.stat().st_size > 10_000


def test_report_classes_figure_names_a_missing_model_measurement(tiny_run, tmp_path):
    from harness.reporting import diagnosis

    fig = {"kind": "classes", "runs": [tiny_run.name], "models": ["gan-weak"], "caption": "classes"}
    with pytest.raises(diagnosis.ReportSpecError, match="--models gan-weak"):
        diagnosis.figure(fig, tiny_run.parent, tmp_path, 1, None)
    class_balance.main(["--models", "gan-weak", "--n", "100", "--results-dir", str(tiny_run.parent)])
    md = diagnosis.figure(fig, tiny_run.parent, tmp_path, 1, None)
    assert (tmp_path / "fig1-classes-runs.png").is_file() and "*Figure 1.* classes" in md


def test_model_histograms_are_measured_once_per_n_and_seed(tmp_path, capsys):
    class_balance.main(["--models", "gan-weak", "--n", "200", "--results-dir", str(tmp_path)])
    stored = class_balance.load_model_hists(tmp_path)
    h = stored["gan-weak"]["class_hists"]
    assert set(h) == set(FEATURE_SPACES) and all(sum(v) == pytest.approx(1.0) for v in h.values())
    assert stored["gan-weak"]["n"] == 200 and "git_commit" in stored["gan-weak"]["manifest"]
    first = (tmp_path / "class_balance" / class_balance.MODELS_FILE).read_bytes()
    class_balance.main(["--models", "gan-weak", "--n", "200", "--results-dir", str(tmp_path)])
    assert (tmp_path / "class_balance" / class_balance.MODELS_FILE).read_bytes() == first  # not measured again
    with pytest.raises(SystemExit, match="error: --models"):
        class_balance.main(["--models", "no-such-model", "--results-dir", str(tmp_path)])
