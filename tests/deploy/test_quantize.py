"""Static int8 QDQ quantization of ONNX classifiers and the accuracy comparison (failatlas.deploy)."""

from __future__ import annotations

import pytest
import torch

from failatlas.errors import FailatlasError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from failatlas.data.datasets import load_dataset  # noqa: E402
from failatlas.deploy import (OnnxClassifier, calibration_images, compare_accuracy,  # noqa: E402
                              export_classifier_onnx, quantize_classifier_int8, read_metadata)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped corrupted-data classifier as fp32 ONNX and int8 QDQ (calibrated on 200 real train images)."""
    folder = tmp_path_factory.mktemp("quant")
    fp32 = export_classifier_onnx("mnist/classifier-corrupted", folder / "fp32.onnx")
    int8 = quantize_classifier_int8(fp32, folder / "int8.onnx", calibration_images(n=200, seed=0))
    return fp32, int8


def test_calibration_images_are_real_balanced_training_images():
    x = calibration_images(n=50, seed=3)
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.mean()) > 0.05
    assert torch.equal(x, calibration_images(n=50, seed=3))
    assert not torch.equal(x, calibration_images(n=50, seed=4))
    # class balance: the same draw on the labels (every class 5 times)
    train = load_dataset("mnist", "train", corruption="corrupted")
    images = train.classifier_input()
    flat = images.flatten(1)
    index = [int(torch.nonzero((flat == row).all(1))[0]) for row in x.flatten(1)]
    counts = torch.bincount(train.labels[index], minlength=10)
    assert counts.tolist() == [5] * 10


def test_calibration_images_bad_sizes():
    with pytest.raises(FailatlasError, match="positive integer"):
        calibration_images(n=0)
    with pytest.raises(FailatlasError, match="8000"):
        calibration_images(n=8001)


def test_int8_model_loads_is_smaller_and_agrees(shipped):
    fp32_path, int8_path = shipped
    fp32, int8 = OnnxClassifier(fp32_path), OnnxClassifier(int8_path, expected_classes=10)
    proto = onnx.load(str(int8_path))
    ops = {node.op_type for node in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert sorted(p.name for p in int8_path.parent.iterdir()) == ["fp32.onnx", "int8.onnx"]
    assert int8_path.stat().st_size < 0.4 * fp32_path.stat().st_size
    meta = read_metadata(int8_path)
    assert meta["num_classes"] == "10" and meta["calibration_images"] == "200"
    assert meta["weight_type"] == "QInt8 symmetric per-channel" and int8.num_classes == 10

    x = load_dataset("mnist", "test", corruption="corrupted").classifier_input()[:500]
    agree = float((fp32(x).argmax(1) == int8(x).argmax(1)).float().mean())
    assert agree >= 0.9
    assert float((fp32(x) - int8(x)).abs().max()) > 0   # it really is a different (quantized) model


def test_compare_accuracy(shipped):
    fp32_path, int8_path = shipped
    result = compare_accuracy({"fp32": fp32_path, "int8": int8_path})
    assert set(result) == {"fp32", "int8"}
    for name in result:
        entry = result[name]
        assert entry["n"] == 2000 and entry["bytes"] > 0 and 0.9 < entry["clean"] <= 1
        assert 0.5 < entry["corrupted"] <= 1
    assert result["int8"]["bytes"] < result["fp32"]["bytes"]
    for split in ("clean", "corrupted"):
        assert abs(result["int8"][split] - result["fp32"][split]) <= 0.01


def test_quantize_errors(shipped, tmp_path):
    fp32_path, int8_path = shipped
    good = calibration_images(n=10)
    with pytest.raises(FailatlasError, match=r"\[N, 1, 28, 28\]"):
        quantize_classifier_int8(fp32_path, tmp_path / "q.onnx", torch.rand(4, 1, 32, 32))
    with pytest.raises(FailatlasError, match="empty"):
        quantize_classifier_int8(fp32_path, tmp_path / "q.onnx", torch.rand(0, 1, 28, 28))
    with pytest.raises(FailatlasError, match="already quantized"):
        quantize_classifier_int8(int8_path, tmp_path / "q.onnx", good)
    with pytest.raises(FailatlasError, match="activation_type"):
        quantize_classifier_int8(fp32_path, tmp_path / "q.onnx", good, activation_type="int4")
    with pytest.raises(FailatlasError, match="not found"):
        quantize_classifier_int8(tmp_path / "missing.onnx", tmp_path / "q.onnx", good)
    assert not (tmp_path / "q.onnx").exists()
