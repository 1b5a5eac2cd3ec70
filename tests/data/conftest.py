"""Fixtures for the data tests: IDX encoding helpers and tiny IDX folders written on the fly.

Tests run with ``--import-mode=importlib`` (no sys.path changes), so helpers are handed out as fixtures.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX encoding of a uint8 array (header magic 0x0000080<ndim> unless ``magic`` is given)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False, magic: int | None = None) -> Path:
    data = idx_bytes(array, magic)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def toy_arrays(n: int = 20, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), (np.arange(n) % classes).astype(np.uint8)


@pytest.fixture
def idx_tools():
    """``idx_bytes``, ``write_idx`` and ``toy_arrays`` as attributes."""
    return SimpleNamespace(idx_bytes=idx_bytes, write_idx=write_idx, toy_arrays=toy_arrays)


@pytest.fixture
def idx_folder(tmp_path):
    """Factory: an IDX folder with train and test files (gzip or raw); returns (folder, arrays)."""

    def make(gz: bool = True, n_train: int = 20, n_test: int = 10, classes: int = 10):
        folder = tmp_path / "idx"
        folder.mkdir(exist_ok=True)
        ext = ".gz" if gz else ""
        arrays = {}
        for split, prefix, n, seed in (("train", "train", n_train, 1), ("test", "t10k", n_test, 2)):
            images, labels = toy_arrays(n, classes, seed)
            write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images, gz=gz)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz=gz)
            arrays[split] = (images, labels)
        return folder, arrays

    return make


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP barriers of small ops wait on descheduled
    threads (600 images: 0.5 s with 2 threads, 0.02 s with 1). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
