"""The IDX reader: round trips and every kind of broken file, through the library and the CLI."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from failatlas.cli import main
from failatlas.data.idx import load_idx_folder, read_idx
from failatlas.errors import FailatlasError


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz, idx_tools):
    images, labels = idx_tools.toy_arrays(7)
    got_images = read_idx(idx_tools.write_idx(tmp_path / "img", images, gz=gz), ndim=3)
    got_labels = read_idx(idx_tools.write_idx(tmp_path / "lab", labels, gz=gz), ndim=1)
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable


def test_gzip_detected_by_magic_not_name(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(3)
    # gzip content under a raw name, raw content under a .gz name: both read by content
    gz_named_raw = idx_tools.write_idx(tmp_path / "a-idx3-ubyte", images, gz=True)
    np.testing.assert_array_equal(read_idx(gz_named_raw), images)
    raw_named_gz = idx_tools.write_idx(tmp_path / "b-idx3-ubyte.gz", images, gz=False)
    np.testing.assert_array_equal(read_idx(raw_named_gz), images)


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_folder(idx_folder, gz):
    folder, arrays = idx_folder(gz=gz)
    for split in ("train", "test"):
        images, labels = load_idx_folder(folder, split)
        np.testing.assert_array_equal(images, arrays[split][0])
        np.testing.assert_array_equal(labels, arrays[split][1])


def test_dotted_names_accepted(tmp_path, idx_tools):
    images, labels = idx_tools.toy_arrays(4)
    idx_tools.write_idx(tmp_path / "t10k-images.idx3-ubyte", images)
    idx_tools.write_idx(tmp_path / "t10k-labels.idx1-ubyte", labels)
    np.testing.assert_array_equal(load_idx_folder(tmp_path, "test")[1], labels)


def test_truncated_gzip(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(50)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    data = gzip.compress(idx_tools.idx_bytes(images), mtime=0)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FailatlasError, match="truncated gzip") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_a_header_of_huge_dims_is_named_truncated_with_the_exact_size(tmp_path, one_error):
    """4e9×4e9×4e9 overflowed int64: the file was called "longer than its header says", expected a negative."""
    import struct

    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">IIII", 0x803, 4_000_000_000, 4_000_000_000, 4_000_000_000) + bytes(100))
    one_error(lambda: read_idx(path, ndim=3), "is truncated", "4000000000×4000000000×4000000000",
              f"expected {4_000_000_000 ** 3}")


def test_truncated_pixels_names_header_and_bytes(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(5)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_tools.idx_bytes(images)[:-100])
    with pytest.raises(FailatlasError) as exc:
        read_idx(path)
    msg = str(exc.value)
    assert str(path) in msg and "truncated" in msg and "5×28×28" in msg and str(5 * 784 - 100) in msg


def test_trailing_bytes_rejected(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(2)
    path = tmp_path / "x"
    path.write_bytes(idx_tools.idx_bytes(images) + b"\0" * 10)
    with pytest.raises(FailatlasError, match="corrupt"):
        read_idx(path)


def test_wrong_magic(tmp_path, idx_tools):
    images, _ = idx_tools.toy_arrays(2)
    path = idx_tools.write_idx(tmp_path / "train-images-idx3-ubyte", images, magic=0x12345678)
    with pytest.raises(FailatlasError, match="magic number 0x12345678") as exc:
        read_idx(path)
    assert str(path) in str(exc.value)


def test_non_ubyte_type_and_swapped_files(tmp_path, idx_tools):
    images, labels = idx_tools.toy_arrays(2)
    with pytest.raises(FailatlasError, match="float32"):
        read_idx(idx_tools.write_idx(tmp_path / "f", images, magic=0x00000D03))
    with pytest.raises(FailatlasError, match="swapped"):
        read_idx(idx_tools.write_idx(tmp_path / "l", labels), ndim=3)
    colour = np.zeros((2, 28, 28, 3), np.uint8)  # RGB images: named as such, with the fix
    with pytest.raises(FailatlasError, match=r"colour images.*convert them to grayscale"):
        read_idx(idx_tools.write_idx(tmp_path / "rgb", colour), ndim=3)


def test_count_mismatch_names_both_files(idx_folder, idx_tools):
    folder, _ = idx_folder(gz=False)
    idx_tools.write_idx(folder / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(FailatlasError) as exc:
        load_idx_folder(folder, "train")
    msg = str(exc.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert "20 images" in msg and "19 labels" in msg


def test_wrong_image_size(tmp_path, idx_tools):
    idx_tools.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 32, 32), np.uint8))
    idx_tools.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(FailatlasError, match="32×32 images"):
        load_idx_folder(tmp_path, "train")


def test_missing_folder_and_missing_file(tmp_path, idx_folder):
    with pytest.raises(FailatlasError, match="IDX folder not found") as exc:
        load_idx_folder(tmp_path / "nope", "train")
    assert "train-images-idx3-ubyte" in str(exc.value)
    folder, _ = idx_folder(gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FailatlasError, match="no test labels file") as exc:
        load_idx_folder(folder, "test")
    assert "t10k-labels-idx1-ubyte" in str(exc.value) and str(folder) in str(exc.value)


def _break(folder, case, write_idx):
    """Damage an IDX folder as ``case`` says; return the text the error line must contain."""
    if case == "truncated_gz":
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:200])
        return str(path)
    if case == "wrong_magic":
        path = folder / "train-images-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(b"\x01\x02\x03\x04" + gzip.decompress(path.read_bytes())[4:]))
        return str(path)
    if case == "count_mismatch":
        write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(3, np.uint8), gz=True)
        return "train-labels-idx1-ubyte.gz"
    if case == "missing_folder":
        return str(folder / "missing")
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated_gz", "wrong_magic", "count_mismatch", "missing_folder"])
def test_cli_bad_idx_exits_2_with_one_line(idx_folder, idx_tools, capsys, case):
    folder, _ = idx_folder(gz=True)
    needle = _break(folder, case, idx_tools.write_idx)
    target = folder / "missing" if case == "missing_folder" else folder
    rc = main(["data", "--dataset", "mnist", "--idx-dir", str(target)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("failatlas: error: ") and err.count("\n") == 1, err
    assert needle in err and "Traceback" not in err
