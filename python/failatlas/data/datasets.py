"""Datasets: padded, optionally corrupted 28×28 grayscale digits with per-sample metadata (DESIGN §1).

Sources (``load_dataset(name, split, idx_dir=...)``):

* ``"mnist"`` without ``idx_dir`` (or ``"mnist10k"``): MNIST-10k, 10,000 real MNIST training digits shipped
  in ``mnist10k.npz`` (built by ``scripts/build_mnist10k.py``). The split is fixed: 8,000 train / 2,000 test,
  stratified by class, drawn once with ``numpy.random.default_rng(20160101)`` by the build script and stored
  in the file as ``train_index`` / ``test_index``, so it cannot drift with numpy versions.
* ``"mnist"`` with ``idx_dir``: the full MNIST IDX files (60,000 train / 10,000 test).
* ``"fashion"``: Fashion-MNIST IDX files; ``idx_dir`` defaults to :data:`FASHION_DIR`, where Debian's
  ``dataset-fashion-mnist`` installs them.
* any other name with ``idx_dir``: a generic 28×28 grayscale IDX pair; classes ``"0"`` .. ``"K-1"``.

Images are zero-padded to 32×32 and, with ``corruption="corrupted"``, corrupted by
:func:`~failatlas.data.corruptions.corrupt` with seed :func:`corruption_seed` ``(seed, split)`` =
``2·seed`` for train and ``2·seed + 1`` for test, so the two splits never share noise.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FailatlasError
from ..models.adapter import PAD, classifier_view, uint8_to_generator
from .corruptions import BLUR_MODES, corrupt
from .idx import find_idx_file, load_idx_folder, read_idx

MNIST10K_PATH = Path(__file__).with_name("mnist10k.npz")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")
CORRUPTIONS = ("corrupted", "clean")
NAMES = ("mnist", "mnist10k", "fashion")
ALIASES = {"fashion-mnist": "fashion", "fashion_mnist": "fashion", "fashionmnist": "fashion"}
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
MAX_SEED = 2**62


@dataclass(frozen=True)
class ImageSet:
    """Padded (and possibly corrupted) images with labels and per-sample corruption metadata."""

    images: torch.Tensor      # uint8 [N, 32, 32]: 28×28 digit zero-padded by 2 px, after corruption
    labels: torch.Tensor      # int64 [N]
    corrupted: torch.Tensor   # bool [N]
    blur: torch.Tensor        # int64 [N], 0 = none, 1..3 = severity
    noise: torch.Tensor       # int64 [N], 0 = none, 1..3
    name: str                 # "mnist10k", "mnist", "fashion" or the generic IDX name
    split: str                # "train" | "test"
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.dim() == 3 else -1
        size = 28 + 2 * PAD
        checks = [
            (self.images.dtype == torch.uint8 and tuple(self.images.shape[1:]) == (size, size) and n >= 0,
             f"images must be uint8 [N, {size}, {size}], got {self.images.dtype} {tuple(self.images.shape)}"),
            (self.labels.dtype == torch.int64 and tuple(self.labels.shape) == (n,),
             f"labels must be int64 [{n}], got {self.labels.dtype} {tuple(self.labels.shape)}"),
            (self.corrupted.dtype == torch.bool and tuple(self.corrupted.shape) == (n,),
             f"corrupted must be bool [{n}], got {self.corrupted.dtype} {tuple(self.corrupted.shape)}"),
            (self.blur.dtype == torch.int64 and tuple(self.blur.shape) == (n,),
             f"blur must be int64 [{n}], got {self.blur.dtype} {tuple(self.blur.shape)}"),
            (self.noise.dtype == torch.int64 and tuple(self.noise.shape) == (n,),
             f"noise must be int64 [{n}], got {self.noise.dtype} {tuple(self.noise.shape)}"),
            (self.split in SPLITS, f"split must be one of {SPLITS}, got {self.split!r}"),
            (len(self.class_names) > 0, "class_names is empty"),
        ]
        for ok, message in checks:
            if not ok:
                raise FailatlasError(f"invalid ImageSet {self.name!r}: {message}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise FailatlasError(
                f"invalid ImageSet {self.name!r}: labels span {int(self.labels.min())}..{int(self.labels.max())} "
                f"but there are {len(self.class_names)} classes"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:  # one line, not every tensor
        return (f"ImageSet({self.name!r}, split={self.split!r}, n={len(self)}, classes={self.num_classes}, "
                f"corrupted={int(self.corrupted.sum())})")

    def __len__(self) -> int:
        return self.images.shape[0]

    def generator_input(self) -> torch.Tensor:
        """float32 Tensor[N, 1, 32, 32] in [-1, 1], the generator's image space."""
        return uint8_to_generator(self.images)

    def classifier_input(self) -> torch.Tensor:
        """float32 Tensor[N, 1, 28, 28] in [0, 1]: the centre crop, exactly as the fused graph's adapter."""
        return classifier_view(self.generator_input())

    def subset(self, index: Any) -> "ImageSet":
        """The samples at ``index``: a slice, integer sequence/array/tensor or a bool mask of length N."""
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = index if torch.is_tensor(index) else torch.as_tensor(np.asarray(index))
            if idx.dtype == torch.bool:
                if tuple(idx.shape) != (len(self),):
                    raise IndexError(f"bool mask of shape {tuple(idx.shape)} for {len(self)} samples")
                idx = torch.nonzero(idx).flatten()
            elif idx.is_floating_point() or idx.is_complex():
                raise IndexError(f"subset() needs integer indices or a bool mask, got {idx.dtype}")
            idx = idx.reshape(-1).to(torch.int64)
        return ImageSet(self.images[idx], self.labels[idx], self.corrupted[idx], self.blur[idx], self.noise[idx],
                        self.name, self.split, self.class_names)


def corruption_seed(seed: int, split: str) -> int:
    """The corruption seed of ``split``: ``2·seed`` for train, ``2·seed + 1`` for test."""
    return 2 * int(seed) + (1 if split == "test" else 0)


@functools.lru_cache(maxsize=1)
def _mnist10k() -> dict[str, np.ndarray]:
    """The decoded MNIST-10k arrays (read-only), cached in memory."""
    try:
        with np.load(MNIST10K_PATH, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("images", "labels", "train_index", "test_index")}
    except (OSError, KeyError, ValueError) as exc:
        raise FailatlasError(
            f"the embedded MNIST-10k {MNIST10K_PATH} is missing or corrupt ({exc}); reinstall failatlas or "
            "rebuild it with scripts/build_mnist10k.py"
        ) from None
    if arrays["images"].shape != (10000, 28, 28) or len(arrays["train_index"]) + len(arrays["test_index"]) != 10000:
        raise FailatlasError(f"the embedded MNIST-10k {MNIST10K_PATH} has unexpected shapes; rebuild it")
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def mnist10k_arrays(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST-10k ``split``: images uint8 [N, 28, 28] and labels uint8 [N] (8,000 train / 2,000 test)."""
    _check_choice("split", split, SPLITS)
    arrays = _mnist10k()
    index = arrays[f"{split}_index"].astype(np.int64)
    return arrays["images"][index], arrays["labels"][index]


def make_imageset(images: Any, labels: Any, *, name: str, split: str = "train", class_names: tuple[str, ...] | None = None,
                  corruption: str = "corrupted", blur: str = "paper", seed: int = 0) -> ImageSet:
    """An :class:`ImageSet` from 28×28 arrays (numpy or torch): pad, then corrupt as :func:`load_dataset` does.

    ``images``: uint8 [N, 28, 28] (0..255) or float [N, 28, 28] in [0, 1]; ``labels``: integers [N].
    """
    _check_options(split, corruption, blur, seed)
    images = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    labels = labels.detach().cpu().numpy() if torch.is_tensor(labels) else np.asarray(labels)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise FailatlasError(f"{name}: images must be [N, 28, 28] grayscale, got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise FailatlasError(f"{name}: {images.shape[0]} images but labels have shape {labels.shape}")
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.floating):
            raise FailatlasError(f"{name}: images must be uint8 or float in [0, 1], got {images.dtype}")
        if not np.isfinite(images).all():
            raise FailatlasError(f"{name}: images contain {int((~np.isfinite(images)).sum())} NaN or inf values")
        if images.size and (images.min() < 0 or images.max() > 1):
            raise FailatlasError(f"{name}: float images must lie in [0, 1], got {images.min()}..{images.max()}")
        images = np.rint(images.astype(np.float64) * 255).astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise FailatlasError(f"{name}: labels must be integers, got {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise FailatlasError(f"{name}: labels must be >= 0, got {labels.min()}")
    if class_names is None:
        class_names = tuple(str(i) for i in range(int(labels.max()) + 1 if labels.size else 1))
    if labels.size and labels.max() >= len(class_names):
        raise FailatlasError(f"{name}: label {labels.max()} but only {len(class_names)} classes")

    padded = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(images)), (PAD,) * 4)
    n = padded.shape[0]
    if corruption == "clean":
        zeros = torch.zeros(n, dtype=torch.int64)
        result = (padded, torch.zeros(n, dtype=torch.bool), zeros, zeros.clone())
    else:
        c = corrupt(padded, corruption_seed(seed, split), blur=blur)
        result = (c.images, c.corrupted, c.blur, c.noise)
    return ImageSet(result[0], torch.from_numpy(labels.astype(np.int64)), *result[1:],
                    name=name, split=split, class_names=tuple(class_names))


def load_dataset(name: str = "mnist", split: str = "train", *, corruption: str = "corrupted",
                 blur: str = "paper", idx_dir: str | os.PathLike | None = None, seed: int = 0) -> ImageSet:
    """Load ``split`` of dataset ``name``, padded to 32×32 and (by default) corrupted; see the module doc."""
    _check_options(split, corruption, blur, seed)
    if not isinstance(name, str) or not name:
        raise FailatlasError(f"dataset name must be a non-empty string, got {name!r}")
    key = canonical_name(name)
    if key == "mnist10k" or (key == "mnist" and idx_dir is None):
        if idx_dir is not None:
            raise FailatlasError("mnist10k is embedded and takes no idx_dir; use name 'mnist' for full MNIST IDX files")
        images, labels = mnist10k_arrays(split)
        return make_imageset(images, labels, name="mnist10k", split=split, class_names=DIGIT_CLASSES,
                             corruption=corruption, blur=blur, seed=seed)
    if key == "fashion" and idx_dir is None:
        if not FASHION_DIR.is_dir():
            raise FailatlasError(
                f"Fashion-MNIST IDX files not found in {FASHION_DIR}; install the Debian package "
                "dataset-fashion-mnist, or pass idx_dir (--idx-dir) pointing at the four IDX files (without root: "
                "`apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb DIR`, then "
                "--idx-dir DIR/usr/share/datasets/fashion-mnist)"
            )
        idx_dir = FASHION_DIR
    if idx_dir is None:
        raise FailatlasError(
            f"unknown dataset {name!r}; choose one of: {', '.join(NAMES)}, or pass idx_dir (--idx-dir) with any "
            "name to load a 28×28 grayscale IDX dataset"
        )
    images, labels = load_idx_folder(idx_dir, split)
    if key in ("mnist", "fashion"):
        class_names = DIGIT_CLASSES if key == "mnist" else FASHION_CLASSES
        if labels.max() >= len(class_names):
            raise FailatlasError(
                f"{find_idx_file(idx_dir, split, 'labels')} has label {labels.max()}, but {key} has "
                f"{len(class_names)} classes; is this the right folder?"
            )
    else:
        # the class count of a generic set comes from both splits where possible, so train and test agree
        # (a class that only the test split holds is still a class: the training warns that it has no image)
        used = set(np.unique(labels).tolist())
        other = "train" if split == "test" else "test"
        try:
            used |= set(np.unique(read_idx(find_idx_file(idx_dir, other, "labels"), ndim=1)).tolist())
        except FailatlasError:
            pass
        top = max(used, default=0)
        if used and 2 * len(used) < top + 1:  # e.g. labels {0, 200}: 201 classes, 199 of them never seen
            shown = ", ".join(map(str, sorted(used)[:10])) + (", …" if len(used) > 10 else "")
            raise FailatlasError(
                f"the labels of {idx_dir} take {len(used)} values ({shown}) but a label is a class index, so "
                f"they would make {top + 1} classes, {top + 1 - len(used)} of them without any image; renumber "
                f"the labels 0..{len(used) - 1} (same order) and write the labels files again")
        class_names = tuple(str(i) for i in range(top + 1))
    return make_imageset(images, labels, name=key if key in NAMES else name, split=split, class_names=class_names,
                         corruption=corruption, blur=blur, seed=seed)


def canonical_name(name: object) -> str:
    """A dataset name as :func:`load_dataset` reads it: lower case, Fashion-MNIST's other spellings
    ("fashion-mnist", "Fashion_MNIST", ...) as "fashion" (so an IDX folder given under either name gets
    Fashion-MNIST's class names)."""
    key = str(name).lower()
    return ALIASES.get(key, key)


def _check_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FailatlasError(f"unknown {what} {value!r}; choose one of: {', '.join(choices)}")


def _check_options(split: str, corruption: str, blur: str, seed: int) -> None:
    _check_choice("split", split, SPLITS)
    _check_choice("corruption", corruption, CORRUPTIONS)
    _check_choice("blur", blur, BLUR_MODES)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < MAX_SEED:
        raise FailatlasError(f"seed must be an integer in [0, 2**62), got {seed!r}")
