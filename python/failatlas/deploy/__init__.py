"""Deployment evaluation: classifiers exported to ONNX, run by ONNX Runtime, and quantized to int8.

* :func:`export_classifier_onnx` → a single-file float32 ``.onnx`` with a dynamic batch;
* :class:`OnnxClassifier`: any ONNX classifier as a drop-in (non-differentiable) torch module;
* :func:`export_classifier_torchscript` / :func:`export_classifier_program` → the classifier as a ``.pt``
  (TorchScript) or ``.pt2`` (``torch.export``) file; :class:`TorchFileClassifier` loads any such file as a
  differentiable drop-in;
* :func:`load_any_classifier`: ``.onnx`` → :class:`OnnxClassifier`, ``.pt``/``.pt2`` →
  :class:`TorchFileClassifier`, else the torch loader;
* :func:`quantize_classifier_int8`: static int8 QDQ quantization calibrated on :func:`calibration_images`;
* :func:`compare_accuracy`: clean / corrupted test accuracy of several classifiers side by side;
* :func:`export_models`: every deployable form of a generator + classifier pair in one folder (ONNX
  classifier, synthesis and fused graph, TorchScript, torch.export, optional int8) with ``export.json``.

Importing this package is cheap: ``onnx`` and ``onnxruntime`` are imported when a function needs them.
"""

from .export import ExportResult, export_models
from .onnx_classifier import (FORMAT_NAME, OnnxClassifier, evaluate_any_classifier, export_classifier_onnx,
                              load_any_classifier, read_metadata)
from .torch_classifier import (TorchFileClassifier, classifier_file_format, export_classifier_program,
                               export_classifier_torchscript)
from .quantize import calibration_images, compare_accuracy, file_size, quantize_classifier_int8, time_classifier

__all__ = [
    "ExportResult", "FORMAT_NAME", "OnnxClassifier", "calibration_images", "compare_accuracy",
    "export_classifier_onnx", "export_models", "file_size", "load_any_classifier", "quantize_classifier_int8",
    "read_metadata", "time_classifier", "TorchFileClassifier", "evaluate_any_classifier", "classifier_file_format",
    "export_classifier_program", "export_classifier_torchscript",
]
