"""`python -m harness.baselines` end to end on a small n, and README <-> CI consistency."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.testbed import baselines
from tests.conftest import requires_data

ROOT = Path(__file__).resolve().parent.parent


@requires_data
def test_baselines_cli_writes_table_grids_and_manifest(tmp_path):
    baselines.main(["--n", "500", "--models", "real-test", "gan-weak", "--noise-repeats", "3", "--results-dir", str(tmp_path),
                    "--threads", "1"])
    out = tmp_path / "baselines"
    table = pd.read_csv(out / "table.csv")
    from harness.evaluation.feature_spaces import FEATURE_SPACES
    from harness.evaluation.scoring import METRICS

    for col in ("model", "n_samples", "nfe", "ms_per_image") + tuple(
            f"{m}_{s}{suffix}" for m in METRICS for s in FEATURE_SPACES for suffix in ("", "_lo", "_hi")):
        assert col in table.columns, col
    measured = table[table.source == "measured"].set_index("model")
    assert list(measured.index) == ["real-test", "gan-weak"]
    assert (measured.n_samples == 500).all()
    # held-out real images are the floor: better than the weak GAN on every metric
    for space in FEATURE_SPACES:
        real, gan = measured.loc["real-test"], measured.loc["gan-weak"]
        assert real[f"kid_{space}"] < gan[f"kid_{space}"] and real[f"precision_{space}"] > gan[f"precision_{space}"]
        assert real[f"class_tv_{space}"] < min(0.1, gan[f"class_tv_{space}"]) and real[f"recall_{space}_lo"] < real[f"recall_{space}"] < real[f"recall_{space}_hi"]
    assert measured.loc["gan-weak", "nfe"] == 1 and measured.loc["gan-weak", "ms_per_image"] > 0
    theirs = table[table.model == "seed000-table1"]
    assert len(theirs) == 3 and theirs.source.str.contains("published").all() and (theirs.n_samples == 100).all()
    assert theirs.published_precision.notna().all() and theirs["precision_vgg"].isna().all()  # never in our columns
    noise = pd.read_csv(out / "noise_n100.csv")
    assert set(noise.model) == {"real-test", "gan-weak"} and (noise.kid_std > 0).all()
    manifest = json.loads((out / "manifest.json").read_text())
    for key in ("command", "config", "seed", "git_commit", "device", "wall_s"):
        assert key in manifest
    for name in ("table.md", "metrics.png", "samples.png", "samples/gan-weak.png"):
        assert (out / name).is_file(), name


def test_baselines_rejects_tiny_n():
    with pytest.raises(SystemExit, match="too small"):
        baselines.main(["--n", "100"])


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    setup, test = blocks[0].strip(), blocks[1].strip()
    product = " && python -m harness.study freeze_ablation"
    assert setup.endswith(product), "the quick start ends with the product's command"
    install = setup[: -len(product)]
    assert install in ci, "CI must install exactly as the README says"
    assert test in ci.splitlines(), "CI must run the README's test command"
