import urllib.error

import pytest
import torch

from harness.testbed import data
from tests.conftest import requires_data, write_idx


def test_parse_idx_roundtrip(tmp_path):
    arr = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x", arr, gz=False)
    assert torch.equal(data.parse_idx((tmp_path / "x").read_bytes()), arr)


def test_parse_idx_rejects_truncated(tmp_path):
    write_idx(tmp_path / "x", torch.zeros(4, 28, 28), gz=False)
    with pytest.raises(ValueError, match="header says"):
        data.parse_idx((tmp_path / "x").read_bytes()[:-5])


def test_lookup_order_explicit_root_wins(fake_idx_dir, isolated_lookup, monkeypatch, tmp_path):
    other = tmp_path / "env-root"
    other.mkdir()
    for f in fake_idx_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("HARNESS_DATA", str(other))
    assert data.find_data_root(fake_idx_dir, allow_download=False) == fake_idx_dir  # argument beats env
    assert data.find_data_root(None, allow_download=False) == other  # env when no argument


def test_lookup_order_debian_before_cache(fake_idx_dir, isolated_lookup, monkeypatch):
    cache = data.cache_dir()
    cache.mkdir(parents=True)
    for f in fake_idx_dir.iterdir():
        (cache / f.name).write_bytes(f.read_bytes())
    assert data.find_data_root(allow_download=False) == cache  # Debian location is empty -> cache
    monkeypatch.setattr(data, "DEBIAN_ROOT", fake_idx_dir)
    assert data.find_data_root(allow_download=False) == fake_idx_dir  # Debian beats cache


def test_incomplete_directory_is_skipped(fake_idx_dir, isolated_lookup, monkeypatch):
    (fake_idx_dir / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setenv("HARNESS_DATA", str(fake_idx_dir))
    with pytest.raises(data.DataNotFoundError):
        data.find_data_root(allow_download=False)


def test_offline_error_is_one_line_naming_three_ways(isolated_lookup, monkeypatch):
    def offline(*_a, **_k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataNotFoundError) as err:
        data.load_split("train")
    msg = str(err.value)
    assert "\n" not in msg
    assert "--data-root" in msg and "HARNESS_DATA" in msg
    assert "dataset-fashion-mnist" in msg and str(data.cache_dir()) in msg
    assert "no network" in msg


def test_download_verifies_checksum(isolated_lookup, monkeypatch):
    import gzip
    import io

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(gzip.compress(b"garbage")))
    with pytest.raises(data.DataNotFoundError, match="checksum mismatch"):
        data.find_data_root()
    assert not list(data.cache_dir().glob("*.gz"))  # nothing half-written left behind


def test_fake_files_fail_checksum_but_parse_without_verification(fake_idx_dir):
    with pytest.raises(data.DataNotFoundError, match="checksum"):
        data.load_split("train", fake_idx_dir)
    x, y = data.load_split("train", fake_idx_dir, verify=False)
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)
    assert x.min() >= -1 and x.max() <= 1


def test_batch_stream_resumes_identically():
    x, y = torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10)
    a = data.BatchStream(x, y, batch_size=3, seed=1)
    for _ in range(4):
        a.next()
    b = data.BatchStream(x, y, batch_size=3, seed=99)
    b.load_state_dict(a.state_dict())
    for _ in range(5):  # crosses an epoch boundary
        assert torch.equal(a.next()[1], b.next()[1])


@requires_data
def test_real_fashion_mnist_shapes_and_range():
    x, y = data.load_split("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.bincount(y).tolist() == [1000] * 10
