"""The IDX file format of MNIST and its relatives (DESIGN §1).

An IDX file is a big-endian header followed by the values, row-major::

    0x00 0x00 <type> <ndim>   dims: ndim × uint32   values

Only unsigned bytes (type 0x08) are read: images are ``0x00000803`` (N × rows × cols), labels
``0x00000801`` (N). Files may be gzip-compressed; compression is detected from the gzip magic bytes,
never from the file name. Every problem (missing, truncated, wrong magic, mismatched counts) raises
:class:`~failatlas.errors.FailatlasError` naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import FailatlasError

GZIP_MAGIC = b"\x1f\x8b"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
UBYTE = 0x08

_TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32",
               0x0E: "float64"}

# Standard file names, first match wins; the dotted variants are what some unzip tools produce.
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_KINDS = {"images": "idx3-ubyte", "labels": "idx1-ubyte"}


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic bytes."""
    if not path.exists():
        raise FailatlasError(f"IDX file not found: {path}")
    if not path.is_file():
        raise FailatlasError(f"{path} is not a file; expected an IDX file (raw or gzip)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FailatlasError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise FailatlasError(
            f"{path} is a truncated gzip file (the compressed stream ends early, {len(raw)} bytes on disk); "
            "download it again"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise FailatlasError(f"{path} is a corrupt gzip file ({exc}); download it again") from None


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or gzip) into a uint8 array of the header's shape.

    ``ndim`` (3 for images, 1 for labels), when given, is required of the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise FailatlasError(f"{path} is truncated: {len(data)} bytes, too short for an IDX header")
    zero, dtype, dims_n = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or dims_n == 0:
        raise FailatlasError(
            f"{path} is not an IDX file: magic number 0x{magic:08X} (expected 0x{IMAGES_MAGIC:08X} for images "
            f"or 0x{LABELS_MAGIC:08X} for labels)"
        )
    if dtype != UBYTE:
        kind = _TYPE_NAMES.get(dtype, f"unknown type 0x{dtype:02X}")
        raise FailatlasError(
            f"{path} holds {kind} values (magic number 0x{magic:08X}); only unsigned-byte IDX files "
            f"(0x{IMAGES_MAGIC:08X} images, 0x{LABELS_MAGIC:08X} labels) are supported"
        )
    if ndim is not None and dims_n != ndim:
        want = UBYTE << 8 | ndim
        what = "images" if ndim == 3 else "labels" if ndim == 1 else f"{ndim}-D data"
        if ndim == 3 and dims_n == 4:
            raise FailatlasError(f"{path} holds 4-D data (magic number 0x{magic:08X}), e.g. colour images "
                                 "[N, H, W, 3]; failatlas takes 28×28 grayscale images [N, 28, 28]: convert them "
                                 "to grayscale and write a 3-D IDX file")
        raise FailatlasError(
            f"{path} has magic number 0x{magic:08X} ({dims_n}-D) but {what} need 0x{want:08X}; "
            "are the images and labels files swapped?"
        )
    header_len = 4 + 4 * dims_n
    if len(data) < header_len:
        raise FailatlasError(f"{path} is truncated: {len(data)} bytes, too short for its {dims_n}-D IDX header")
    shape = struct.unpack(f">{dims_n}I", data[4:header_len])
    expected = math.prod(shape)  # Python's int: a damaged header's 4e9×4e9×4e9 overflows int64
    held = len(data) - header_len
    if held != expected:
        state = "truncated" if held < expected else "corrupt (longer than its header says)"
        dims = "×".join(str(d) for d in shape)
        unit = {3: "pixels", 1: "labels"}.get(dims_n, "values")
        raise FailatlasError(
            f"{path} is {state}: header says {dims} but the file holds {held} bytes of {unit} "
            f"(expected {expected}); download it again"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def idx_candidates(folder: str | os.PathLike, split: str, kind: str) -> list[Path]:
    """Standard file names for ``split`` ("train" | "test") and ``kind`` ("images" | "labels")."""
    prefix, suffix = _SPLIT_PREFIX[split], _KINDS[kind]
    folder = Path(folder)
    names = [f"{prefix}-{kind}-{suffix}", f"{prefix}-{kind}.{suffix}"]
    return [folder / (n + gz) for n in names for gz in ("", ".gz")]


def find_idx_file(folder: str | os.PathLike, split: str, kind: str) -> Path:
    for candidate in idx_candidates(folder, split, kind):
        if candidate.is_file():
            return candidate
    names = " or ".join(c.name for c in idx_candidates(folder, split, kind) if c.suffix != ".gz")
    raise FailatlasError(
        f"no {split} {kind} file in {folder}: expected {names} (optionally .gz); an IDX folder holds "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"
    )


def load_idx_folder(folder: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels uint8 [N] of ``split`` ("train" | "test") from an IDX folder."""
    if split not in _SPLIT_PREFIX:
        raise FailatlasError(f"unknown split {split!r}; choose one of: {', '.join(_SPLIT_PREFIX)}")
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise FailatlasError(
            f"IDX folder {what}: {folder}; it must hold train-images-idx3-ubyte[.gz], "
            "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]"
        )
    images_path = find_idx_file(folder, split, "images")
    labels_path = find_idx_file(folder, split, "labels")
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.shape[1:] != (28, 28):
        raise FailatlasError(
            f"{images_path} holds {images.shape[1]}×{images.shape[2]} images; failatlas needs 28×28 grayscale"
        )
    if len(images) == 0:
        raise FailatlasError(f"{images_path} holds no images")
    if len(labels) != len(images):
        raise FailatlasError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels; "
            "use the labels file that belongs to these images"
        )
    return images, labels
