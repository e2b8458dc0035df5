"""FashionMNIST from the original IDX files, held as one tensor in memory.

Lookup order for the four IDX files (plain or .gz):
  1. ``data_root`` argument (the CLIs' ``--data-root``) or the ``HARNESS_DATA`` environment variable;
  2. Debian's ``dataset-fashion-mnist`` package location, /usr/share/datasets/fashion-mnist;
  3. the cache directory (``$XDG_CACHE_HOME/harness/fashion-mnist``, default ~/.cache/...);
  4. otherwise download the four files into the cache, verifying checksums.
Offline with none of these: ``DataNotFoundError`` with a one-line message naming the three ways.

Images are scaled to [-1, 1] (x = 2 * pixel / 255 - 1), shape (N, 1, 28, 28), float32.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import torch

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# sha256 of the *decompressed* IDX bytes: independent of how a distributor gzipped them.
FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class DataNotFoundError(RuntimeError):
    """FashionMNIST could not be found or downloaded."""


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "harness" / "fashion-mnist"


def _find_file(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_all(root: Path) -> bool:
    return all(_find_file(root, name) is not None for name in FILES)


def candidate_roots(data_root: str | os.PathLike | None = None) -> list[Path]:
    """The directories searched, in order (explicit root / HARNESS_DATA, Debian, cache)."""
    explicit = data_root if data_root is not None else os.environ.get("HARNESS_DATA")
    roots = [Path(explicit)] if explicit else []
    return roots + [DEBIAN_ROOT, cache_dir()]


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def download(dest: Path, mirror: str = MIRROR, timeout: float = 20.0) -> Path:
    """Fetch the four .gz files into ``dest`` and verify their checksums."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, sha in FILES.items():
        target = dest / f"{name}.gz"
        if target.is_file() and hashlib.sha256(read_bytes(target)).hexdigest() == sha:
            continue
        with urllib.request.urlopen(f"{mirror}{name}.gz", timeout=timeout) as response:
            payload = response.read()
        digest = hashlib.sha256(gzip.decompress(payload)).hexdigest()
        if digest != sha:
            raise DataNotFoundError(f"checksum mismatch for downloaded {name}.gz (got {digest[:12]}..., expected {sha[:12]}...)")
        tmp = target.with_suffix(".gz.part")
        tmp.write_bytes(payload)
        tmp.replace(target)
    return dest


def find_data_root(data_root: str | os.PathLike | None = None, allow_download: bool = True) -> Path:
    """First directory in the lookup order holding all four files; download into the cache otherwise."""
    for root in candidate_roots(data_root):
        if _has_all(root):
            return root
    if allow_download:
        try:
            return download(cache_dir())
        except DataNotFoundError:
            raise
        except OSError as err:  # URLError is an OSError: offline, DNS failure, refused
            reason = getattr(err, "reason", err)
            raise DataNotFoundError(_missing_message(data_root, f"download failed: {reason}")) from None
    raise DataNotFoundError(_missing_message(data_root, "download disabled"))


def _missing_message(data_root, why: str) -> str:
    return (f"FashionMNIST IDX files not found ({why}); provide them by one of: --data-root DIR / HARNESS_DATA=DIR "
            f"(searched {data_root or os.environ.get('HARNESS_DATA') or 'unset'}), "
            f"`apt-get install dataset-fashion-mnist` ({DEBIAN_ROOT}), or copying them into the cache {cache_dir()}")


def parse_idx(raw: bytes) -> torch.Tensor:
    """Parse an IDX file (big-endian header: magic 0x0000 0x08 ndim, then ndim uint32 sizes) to uint8."""
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(torch.tensor(shape).prod()):
        raise ValueError(f"IDX body has {len(body)} bytes, header says shape {shape}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def data_checksum(root: Path) -> str:
    """Short fingerprint of the dataset actually read (sha256 over the four decompressed files)."""
    h = hashlib.sha256()
    for name in FILES:
        h.update(read_bytes(_find_file(root, name)))
    return h.hexdigest()[:16]


def load_split(split: str, data_root: str | os.PathLike | None = None, verify: bool = True,
               allow_download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, 1, 28, 28) in [-1, 1], labels int64 (N,)) for ``split`` in {'train', 'test'}."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    root = find_data_root(data_root, allow_download)
    arrays = []
    for name in SPLITS[split]:
        raw = read_bytes(_find_file(root, name))
        if verify and hashlib.sha256(raw).hexdigest() != FILES[name]:
            raise DataNotFoundError(f"{root / name}: checksum mismatch; the file is corrupt or not FashionMNIST")
        arrays.append(parse_idx(raw))
    images, labels = arrays
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0), labels.long()


class BatchStream:
    """Endless shuffled mini-batches over an in-memory tensor, resumable via ``state_dict``.

    Shuffling uses its own torch.Generator, so resuming after an interruption continues the exact
    same sequence of batches.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int = 0):
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.position = 0, 0
        self.order = torch.randperm(len(images), generator=self.generator)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self.order):  # drop the ragged tail, reshuffle
            self.epoch += 1
            self.position = 0
            self.order = torch.randperm(len(self.images), generator=self.generator)
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.images[idx], self.labels[idx]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "epoch": self.epoch, "position": self.position,
                "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch, self.position, self.order = state["epoch"], state["position"], state["order"]
