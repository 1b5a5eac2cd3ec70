"""Static int8 quantization of ONNX classifiers, and accuracy side by side with float32.

* :func:`calibration_images`: real training images (a class-balanced random subset) as classifier inputs.
* :func:`quantize_classifier_int8`: ONNX Runtime's static quantization in QDQ format (int8 weights,
  per channel by default; int8 activations with ranges calibrated on those images), written as one file.
* :func:`compare_accuracy`: accuracy of several classifiers (torch or ONNX) on the clean and corrupted
  test splits, optionally with file sizes and timings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from .._io import atomic_path, make_temp
from ..errors import FailatlasError
from .onnx_classifier import (IN_SHAPE, OnnxClassifier, _first_line, _run_bytes, load_any_classifier,
                              set_metadata)

ACTIVATION_TYPES = ("int8", "uint8")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
TEST_SPLITS = ("clean", "corrupted")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantization tools log advice ('please run pre-processing', ...) at WARNING."""
    import warnings

    root = logging.getLogger()
    level = root.level
    try:
        root.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def calibration_images(dataset: str = "mnist", n: int = 1000, seed: int = 0, corruption: str = "corrupted", *,
                       blur: str = "paper", idx_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """``n`` real TRAIN images of ``dataset`` as classifier inputs, float32 ``Tensor[n, 1, 28, 28]`` in [0, 1].

    The training split is loaded as the classifiers are trained on it (``corruption`` "corrupted" or
    "clean", ``blur`` mode, the dataset's standard corruption seed 0), and ``n`` images are drawn without
    replacement, class-balanced: a random permutation seeded with ``seed`` is taken round-robin over the
    classes, so every class contributes ``n // K`` or one more image (while it has images left).
    """
    from ..data.datasets import load_dataset

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise FailatlasError(f"the number of calibration images must be a positive integer, got {n!r}")
    data = load_dataset(dataset, "train", corruption=corruption, blur=blur, idx_dir=idx_dir, seed=0)
    total = len(data)
    if n > total:
        raise FailatlasError(f"asked for {n} calibration images but the {data.name} training split has {total}; "
                             f"use n <= {total}")
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(total, generator=g)
    labels = data.labels[perm]
    # rank of each permuted sample within its class: 0 for the first of its class, 1 for the second, ...
    rank = torch.empty(total, dtype=torch.int64)
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    order = torch.argsort(rank * total + torch.arange(total), stable=True)
    chosen = perm[order[:n]]
    return data.subset(chosen).classifier_input().contiguous()


def _check_images(images: Any) -> torch.Tensor:
    from ..models.classifier import check_classifier_input

    x = check_classifier_input(images, IN_SHAPE)
    if x.shape[0] == 0:
        raise FailatlasError("calibration_images is empty; pass real training images, e.g. "
                             "failatlas.deploy.calibration_images(n=1000)")
    return x.detach().to("cpu", torch.float32).contiguous()


def quantize_classifier_int8(fp32_onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                             calibration_images: torch.Tensor, per_channel: bool = True, *,
                             activation_type: str = "int8", calibrate_method: str = "minmax",
                             batch_size: int = 100, preprocess: bool = True) -> Path:
    """Quantize a float32 ONNX classifier to int8 (static, QDQ format) and write it to ``out_path``.

    ``calibration_images``: real images the classifier sees, float ``Tensor[N, 1, 28, 28]`` in [0, 1] (e.g.
    :func:`calibration_images`); activation ranges are calibrated on them (``calibrate_method``: ``"minmax"``,
    ``"entropy"`` or ``"percentile"``), fed in batches of ``batch_size``. Weights are QInt8, symmetric,
    ``per_channel`` (one scale per output channel) by default; activations ``activation_type`` ``"int8"``
    (QInt8, ONNX Runtime's recommended S8S8 for QDQ) or ``"uint8"``. With ``preprocess`` the model first goes
    through ``onnxruntime.quantization.shape_inference.quant_pre_process`` (shape inference and graph
    optimization); if that fails the model is quantized as it is.

    The result is checked (``onnx.checker``, one ONNX Runtime run), keeps the input's ``metadata_props``
    (``num_classes``, ...) plus ``quantization`` details, and is written atomically as one file. It loads with
    :class:`OnnxClassifier`. Returns ``out_path``.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, out = Path(fp32_onnx_path), Path(out_path)
    if out.suffix.lower() != ".onnx":
        raise FailatlasError(f"the quantized classifier's path must end in .onnx, got {str(out)!r}")
    if out.is_dir():
        raise FailatlasError(f"cannot write the quantized classifier to {out}: it is a folder; give a .onnx file name")
    if activation_type not in ACTIVATION_TYPES:
        raise FailatlasError(f"activation_type must be one of {', '.join(ACTIVATION_TYPES)}, got {activation_type!r}")
    if calibrate_method not in CALIBRATE_METHODS:
        raise FailatlasError(f"calibrate_method must be one of {', '.join(CALIBRATE_METHODS)}, got {calibrate_method!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise FailatlasError(f"batch_size must be a positive integer, got {batch_size!r}")
    fp32 = OnnxClassifier(src)          # validates the file: shape, dynamic batch, classes
    if fp32.quantized:
        raise FailatlasError(f"{src} is already quantized; quantize the float32 model it was made from")
    images = _check_images(calibration_images)
    input_name, metadata = fp32.input_name, dict(fp32.metadata)
    del fp32

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(images):
                return None
            batch = images[self.start:self.start + int(batch_size)].numpy()
            self.start += int(batch_size)
            return {input_name: batch}

        def rewind(self) -> None:
            self.start = 0

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    act = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    preprocessed = False
    tmp = make_temp(tempfile.gettempdir(), "failatlas-quant-")  # after removing a killed quantization's
    try:
        model_in = src
        if preprocess:
            pre = tmp / "pre.onnx"
            try:
                with _quiet():
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
                model_in, preprocessed = pre, True
            except Exception:  # noqa: BLE001 - pre-processing is an optimization; quantize the original
                model_in = src
        q_path = tmp / "int8.onnx"
        try:
            with _quiet():
                quantize_static(str(model_in), str(q_path), _Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=bool(per_channel), activation_type=act, weight_type=QuantType.QInt8,
                                calibrate_method=method, use_external_data_format=False,
                                extra_options={"CalibTensorRangeSymmetric": False})
        except Exception as exc:  # noqa: BLE001
            raise FailatlasError(f"ONNX Runtime could not quantize {src} ({_first_line(exc)}); check that it is a "
                                 "float32 classifier exported with failatlas.deploy.export_classifier_onnx") from None
        proto = onnx.load(str(q_path))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    metadata.update(quantization="static int8 QDQ (onnxruntime.quantization.quantize_static)",
                    weight_type="QInt8 symmetric" + (" per-channel" if per_channel else " per-tensor"),
                    activation_type="QInt8" if activation_type == "int8" else "QUInt8",
                    calibrate_method=calibrate_method, calibration_images=str(len(images)),
                    quant_pre_process=str(preprocessed).lower(), float_model=src.name)
    set_metadata(proto, metadata)
    try:
        onnx.checker.check_model(proto)
    except Exception as exc:  # noqa: BLE001
        raise FailatlasError(f"the quantized model fails onnx.checker ({_first_line(exc)}); this is a bug in the "
                             "quantization: please report it") from None
    data = proto.SerializeToString()
    try:
        logits = _run_bytes(data, images[:2].numpy())
    except Exception as exc:  # noqa: BLE001
        raise FailatlasError(f"ONNX Runtime cannot run the quantized model ({_first_line(exc)}); not written") from None
    if logits.shape[0] != min(2, len(images)) or not np.isfinite(logits).all():
        raise FailatlasError(f"the quantized model returns {list(logits.shape)} non-finite or misshaped logits; "
                             "not written")
    with atomic_path(out) as tmp_out:
        tmp_out.write_bytes(data)
    return out


def file_size(path: str | os.PathLike) -> int:
    """Bytes of a model on disk: a file's size, or a classifier folder's weights + config."""
    from .._paths import resolve_model

    p = Path(path)
    if p.suffix.lower() != ".onnx":
        p = resolve_model(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        from ..models.classifier import CONFIG_FILE, WEIGHTS_FILE

        return sum((p / name).stat().st_size for name in (WEIGHTS_FILE, CONFIG_FILE) if (p / name).is_file())
    raise FailatlasError(f"model not found: {p}")


def time_classifier(model: nn.Module, images: torch.Tensor, batch_size: int = 500, repeats: int = 3) -> float:
    """Median wall-clock seconds (over ``repeats`` runs, after one warm-up batch) to classify ``images``."""
    times = []
    model.eval()
    with torch.inference_mode():
        model(images[:batch_size])
        for _ in range(repeats):
            start = time.perf_counter()
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def compare_accuracy(models: Mapping[str, nn.Module | str | os.PathLike], dataset: str = "mnist", *,
                     batch_size: int = 500, time_repeats: int = 0, blur: str = "paper", seed: int = 0,
                     idx_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Accuracy of each classifier on the clean and the corrupted TEST split of ``dataset``.

    ``models``: name → a classifier module, a ``.onnx``, ``.pt`` or ``.pt2`` file, a classifier folder or a shipped model name
    (paths are loaded with :func:`load_any_classifier`). Returns ``{name: {"clean": acc, "corrupted": acc,
    "n": images per split}}``, plus ``"bytes"`` (:func:`file_size`) for models given as paths and, with
    ``time_repeats`` > 0, ``"seconds"``: the median time to classify the clean test split in batches of
    ``batch_size`` (:func:`time_classifier`). Accuracy is computed by
    :func:`failatlas.training.classifier.evaluate_classifier` (the ``failatlas eval-classifier`` logic).
    """
    from ..data.datasets import load_dataset
    from ..training.classifier import evaluate_classifier

    if not models:
        raise FailatlasError("compare_accuracy needs at least one classifier")
    splits = {on: load_dataset(dataset, "test", corruption=on, blur=blur, idx_dir=idx_dir, seed=seed)
              for on in TEST_SPLITS}
    results: dict[str, dict[str, Any]] = {}
    for name, spec in models.items():
        entry: dict[str, Any] = {}
        if isinstance(spec, nn.Module):
            model = spec
        else:
            model = load_any_classifier(spec)
            entry["path"] = str(spec)
            entry["bytes"] = file_size(spec)
        for on, data in splits.items():
            result = evaluate_classifier(model, dataset=data, on=on, batch_size=batch_size)
            entry[on] = result["accuracy"]
            entry["n"] = result["n"]
        if time_repeats:
            entry["seconds"] = time_classifier(model, splits["clean"].classifier_input(), batch_size, time_repeats)
        results[str(name)] = entry
    return results
