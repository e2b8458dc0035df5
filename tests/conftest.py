import gzip
import struct
from pathlib import Path

import pytest
import torch

from harness.testbed import data

torch.set_num_threads(1)  # the suite runs on 2 shared cores; one thread per process is the fast setting


def write_idx(path: Path, array: torch.Tensor, gz: bool = True) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    path.write_bytes(gzip.compress(payload) if gz else payload)


@pytest.fixture
def fake_idx_dir(tmp_path):
    """A directory with four tiny IDX files under the real names (contents are not FashionMNIST)."""
    d = tmp_path / "fake-fmnist"
    d.mkdir()
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 32), ("t10k", 16)):
        write_idx(d / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), generator=g), gz=False)
        write_idx(d / f"{split}-labels-idx1-ubyte", torch.randint(0, 10, (n,), generator=g), gz=False)
    return d


@pytest.fixture
def isolated_lookup(tmp_path, monkeypatch):
    """No explicit root, no HARNESS_DATA, an empty Debian location and an empty cache."""
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setattr(data, "DEBIAN_ROOT", tmp_path / "no-debian")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def real_data_available() -> bool:
    try:
        data.find_data_root(allow_download=False)
        return True
    except data.DataNotFoundError:
        return False


requires_data = pytest.mark.skipif(not real_data_available(), reason="FashionMNIST IDX files not installed "
                                   "(apt-get install dataset-fashion-mnist; .ci/run does)")


@pytest.fixture(scope="session")
def toy_smoke_results(tmp_path_factory):
    """A finished toy study at the smoke budget (3 lr values x 2 seeds, no assets), shared by the tests that read a
    study: the report generator, the dashboard. Returns the results directory; the study is DIR/toy_study-smoke."""
    from harness.study import cli as study_mod
    from tests.test_study import write_toy_specs

    root = write_toy_specs(tmp_path_factory.mktemp("specs"), rounds=10, eval_every=5)
    res = tmp_path_factory.mktemp("res")
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_SPECS", str(root))
    study_mod.main(["toy_study", "--budget", "smoke", "--results-dir", str(res), "--threads", "1"])
    mp.undo()
    return res
