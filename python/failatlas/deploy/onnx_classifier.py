"""Classifiers as ONNX files, run by ONNX Runtime as drop-in replacements for the torch ones.

* :func:`export_classifier_onnx` writes a failatlas classifier as one self-contained ``.onnx`` file
  (float32, dynamic batch, input ``images`` ``[N, 1, 28, 28]`` in [0, 1] → output ``logits`` ``[N, C]``),
  with ``num_classes`` and the format name in the model's ``metadata_props``.
* :class:`OnnxClassifier` loads any such ONNX classifier (exported here or elsewhere: a quantized one, one
  from another framework) and validates it once, at load time; calling it maps a torch tensor to a torch
  tensor of logits, like a torch classifier.
* :func:`load_any_classifier`: a ``.onnx`` file → :class:`OnnxClassifier`, a ``.pt``/``.pt2`` file → a
  :class:`~failatlas.deploy.torch_classifier.TorchFileClassifier`, anything else → the torch loader.

``onnx``, ``onnxruntime`` and ``torch.onnx`` are imported inside the functions, so importing this module
is cheap.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from .._io import atomic_path
from ..errors import FailatlasError, error_line

#: ``metadata_props`` key → value naming files written by :func:`export_classifier_onnx`.
FORMAT_KEY = "failatlas_format"
FORMAT_NAME = "failatlas-onnx-classifier"
FORMAT_VERSION = "1"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
IN_SHAPE = (1, 28, 28)
#: the opset of the TorchScript fallback exporter (the dynamo exporter picks its own, currently 20)
FALLBACK_OPSET = 17
#: an exported model must reproduce the torch logits within this, relative to max(1, |largest logit|)
EXPORT_RTOL = 1e-4
# batch-independence probe at load time, relative to max(1, |largest logit|): looser than a torch file's
# 1e-4 (a margin for run-time differences between batch sizes); BatchNorm exported in training mode moved
# logits by 1.38 (measured on a small CNN). A dynamically quantized graph is not probed: it depends on its batch by design.
_BATCH_RTOL = 1e-2


_first_line = error_line  # the name the deploy modules use


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's log lines (e.g. 'torchvision is not installed') while exporting."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export",
                                                     "onnxscript", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    import warnings

    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# ---------------------------------------------------------------------------------------------- export

def export_classifier_onnx(classifier: nn.Module | str | os.PathLike, path: str | os.PathLike, *,
                           dynamo: bool = True) -> Path:
    """Write ``classifier`` as a single-file float32 ONNX model with a dynamic batch; returns ``path``.

    ``classifier``: a module mapping ``Tensor[N, 1, 28, 28]`` in [0, 1] to logits ``[N, C]``, or a classifier
    folder / shipped model name (``"mnist/classifier-clean"``). A float32 CPU copy in eval mode is exported
    (BatchNorm uses its running statistics), so the caller's module is left as it was.

    Uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, batch dimension ``"batch"`` via
    ``dynamic_shapes``); if that fails, the TorchScript exporter (``dynamo=False``, ``dynamic_axes``, opset
    :data:`FALLBACK_OPSET`). The model is checked with ``onnx.checker.check_model``, run once with ONNX
    Runtime and compared with the torch logits (relative tolerance :data:`EXPORT_RTOL`) before it is written,
    atomically. ``metadata_props`` hold ``failatlas_format``, ``failatlas_format_version``, ``num_classes``,
    ``exporter``, and (for failatlas classifiers) ``architecture``, ``dataset`` and ``class_names`` (JSON).
    """
    import onnx

    path = _check_out_file(path, ".onnx", "ONNX classifier")
    model, config, example, reference, num_classes = prepare_export(classifier)

    proto, exporter = None, ""
    errors: list[str] = []
    if dynamo:
        try:
            proto = _export_dynamo(model, example)
            exporter = "torch.onnx dynamo"
        except Exception as exc:  # noqa: BLE001 - fall back to the TorchScript exporter below
            errors.append(f"dynamo exporter: {_first_line(exc)}")
    if proto is None:
        try:
            proto = _export_torchscript(model, example)
            exporter = "torch.onnx torchscript"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"TorchScript exporter: {_first_line(exc)}")
            raise FailatlasError(f"cannot export the classifier to ONNX ({'; '.join(errors)}); only plain "
                                 "feed-forward torch modules can be exported") from None

    meta = {FORMAT_KEY: FORMAT_NAME, "failatlas_format_version": FORMAT_VERSION,
            **classifier_metadata(config, num_classes, exporter)}
    set_metadata(proto, meta)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # noqa: BLE001
        raise FailatlasError(f"the exported ONNX model fails onnx.checker ({_first_line(exc)}); this is a "
                             "failatlas bug: please report it") from None

    data = proto.SerializeToString()
    got = _run_bytes(data, example.numpy())
    scale = max(1.0, float(reference.abs().max()))
    err = float(np.abs(got - reference.numpy()).max()) / scale
    if not np.isfinite(err) or err > EXPORT_RTOL:
        raise FailatlasError(f"the exported ONNX model's logits differ from the torch classifier's by {err:.3g} "
                             f"(relative; tolerance {EXPORT_RTOL:g}); the export is wrong, not written")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path



def _check_out_file(path: str | os.PathLike, suffix: str, what: str) -> Path:
    """The path an exported classifier is written to: it must end in ``suffix`` and not be a folder."""
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise FailatlasError(f"the {what} path must end in {suffix}, got {str(path)!r}")
    if path.is_dir():
        raise FailatlasError(f"cannot write the {what} to {path}: it is a folder; give a file name ending in "
                             f"{suffix}")
    return path


def prepare_export(classifier: nn.Module | str | os.PathLike) -> tuple[nn.Module, Any, torch.Tensor, torch.Tensor, int]:
    """What every classifier export starts from: ``(model, config, example, reference, num_classes)``.

    ``model``: a float32 CPU copy of ``classifier`` (a module, a classifier folder or a shipped name) in eval
    mode without gradients, so the caller's module is left as it was; ``config``: its
    :class:`~failatlas.models.classifier.ClassifierConfig` or None; ``example``: three seeded images
    ``[3, 1, 28, 28]`` in [0, 1]; ``reference``: the model's logits on them. A model that fails on such
    images or does not return ``[N, C]`` logits raises :class:`FailatlasError`.
    """
    from ..models.classifier import classifier_config_of

    if not isinstance(classifier, nn.Module):
        from .._paths import resolve_model
        from ..models.classifier import load_classifier

        classifier = load_classifier(resolve_model(classifier))
    config = classifier_config_of(classifier)
    model = copy.deepcopy(classifier).cpu().float().eval()
    for p in model.parameters():
        p.requires_grad_(False)

    example = torch.rand(3, *IN_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        try:
            reference = model(example)
        except Exception as exc:  # noqa: BLE001 - any failure of a user module is reported the same way
            raise FailatlasError(f"the classifier fails on a batch of [3, 1, 28, 28] images ({_first_line(exc)}); "
                                 "only classifiers of 28×28 one-channel images can be exported") from None
    if not isinstance(reference, torch.Tensor) or reference.dim() != 2 or reference.shape[0] != 3:
        shape = list(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
        raise FailatlasError(f"the classifier returns {shape} for 3 images; it must return logits [N, num_classes]")
    num_classes = int(reference.shape[1])
    if config is not None and config.num_classes != num_classes:
        raise FailatlasError(f"the classifier's config says num_classes={config.num_classes} but it returns "
                             f"{num_classes} logits; fix the config or retrain it")
    return model, config, example, reference, num_classes


def classifier_metadata(config: Any, num_classes: int, exporter: str) -> dict[str, str]:
    """The string metadata an exported classifier file carries (ONNX ``metadata_props``, or the JSON extra
    file of a TorchScript / torch.export file): input and output conventions, ``num_classes``, ``exporter``,
    the torch version and, for failatlas classifiers, ``architecture``, ``dataset`` and ``class_names`` (JSON)."""
    meta = {"num_classes": str(num_classes),
            "input": f"{INPUT_NAME}: float32 [N, 1, 28, 28], intensities in [0, 1]",
            "output": f"{OUTPUT_NAME}: float32 [N, {num_classes}]", "exporter": exporter,
            "torch_version": torch.__version__}
    if config is not None:
        meta.update(architecture=config.architecture, dataset=config.dataset)
        if config.class_names is not None:
            meta["class_names"] = json.dumps(list(config.class_names))
        training = config.training if isinstance(config.training, dict) else {}
        if isinstance(training.get("dataset"), str):  # the data it was trained on, to be judged on it again
            meta["training_data"] = json.dumps({k: training.get(k) for k in ("dataset", "idx_dir", "blur")})
    return meta



def file_classifier_config(metadata: dict[str, str], num_classes: int, architecture: str, path: Path) -> Any:
    """The :class:`~failatlas.models.classifier.ClassifierConfig` of a classifier loaded from a file: its class
    count, and the dataset and class names its export metadata names (ignored when they do not fit)."""
    from ..models.classifier import ClassifierConfig

    names = None
    if "class_names" in metadata:
        try:
            parsed = json.loads(metadata["class_names"])
            if isinstance(parsed, list) and len(parsed) == num_classes:
                names = tuple(str(n) for n in parsed)
        except ValueError:
            names = None
    training: dict[str, Any] = {}
    try:  # the training data's record (dataset, IDX folder, blur), from files exported since it was written
        data = json.loads(metadata.get("training_data", "{}"))
        if isinstance(data, dict) and isinstance(data.get("dataset"), str):
            training = {k: data.get(k) for k in ("dataset", "idx_dir", "blur")}
    except ValueError:
        training = {}
    return ClassifierConfig(architecture=architecture, num_classes=num_classes, in_shape=IN_SHAPE,
                            dataset=metadata.get("dataset", ""), class_names=names,
                            training={**training, f"{architecture}_file": str(path)})


def check_images(x: Any, who: str) -> None:
    """Raise :class:`FailatlasError` unless ``x`` is a floating-point ``Tensor[N, 1, 28, 28]`` (the input of
    every file classifier), with a hint for the usual mistakes; ``who`` names the classifier."""
    if not isinstance(x, torch.Tensor):
        raise FailatlasError(f"{who} takes a torch.Tensor [N, 1, 28, 28], got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != IN_SHAPE:
        hint = ""
        if x.dim() == 4 and tuple(x.shape[-2:]) == (32, 32):
            hint = (" (generator images are 32×32 in [-1, 1]: pass them through "
                    "failatlas.models.adapter.classifier_view)")
        elif tuple(x.shape) == IN_SHAPE:
            hint = " (add the batch dimension, e.g. x.unsqueeze(0))"
        elif x.dim() == 3 and tuple(x.shape[1:]) == IN_SHAPE[1:]:
            hint = " (add the channel dimension, e.g. x.unsqueeze(1))"
        raise FailatlasError(f"{who}'s input has shape {list(x.shape)}, expected [N, 1, 28, 28]{hint}")
    if not x.is_floating_point():
        raise FailatlasError(f"{who}'s input has dtype {x.dtype}; expected floating-point intensities in [0, 1] "
                             "(convert uint8 images with x.float() / 255)")


def _export_dynamo(model: nn.Module, example: torch.Tensor) -> Any:
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter():
        program = torch.onnx.export(model, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamo=True, external_data=False, dynamic_shapes=({0: batch},),
                                    verbose=False, optimize=True)
    return program.model_proto


def _export_torchscript(model: nn.Module, example: torch.Tensor) -> Any:
    import io

    import onnx

    buf = io.BytesIO()
    with _quiet_exporter():
        torch.onnx.export(model, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamo=False, opset_version=FALLBACK_OPSET, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return onnx.load_from_string(buf.getvalue())


def _run_bytes(data: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def set_metadata(proto: Any, values: dict[str, str]) -> None:
    """Set ``metadata_props`` entries of an ``onnx.ModelProto`` in place (existing keys are replaced)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    for key, value in keep + [(k, str(v)) for k, v in values.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (the weights are not loaded)."""
    return {p.key: p.value for p in _parse(Path(path)).metadata_props}


# ---------------------------------------------------------------------------------------------- loading

def _check_file(path: Path) -> None:
    if not path.exists():
        raise FailatlasError(f"ONNX classifier not found: {path}; export one with "
                             "failatlas.deploy.export_classifier_onnx(classifier, path) or check the path")
    if not path.is_file():
        raise FailatlasError(f"{path} is not a file; pass the .onnx file of the classifier")
    if path.stat().st_size == 0:
        raise FailatlasError(f"{path} is empty, not an ONNX model; re-export it with "
                             "failatlas.deploy.export_classifier_onnx")


def _parse(path: Path) -> Any:
    """The ModelProto of ``path`` without external weights; unreadable files raise FailatlasError."""
    import onnx

    _check_file(path)
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise FailatlasError(f"{path} is not a valid ONNX model: it is corrupt, truncated or not an ONNX file "
                             f"({_first_line(exc)}); re-export it with failatlas.deploy.export_classifier_onnx") from None


def _validate_file(path: Path) -> tuple[dict[str, str], bool, bool]:
    """Parse and check an ONNX file; returns its metadata, whether it is quantized and whether dynamically.
    One FailatlasError per problem."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = _parse(path)
    for tensor in proto.graph.initializer:
        if uses_external_data(tensor):
            location = {e.key: e.value for e in tensor.external_data}.get("location", "")
            if not location or not (path.parent / location).is_file():
                raise FailatlasError(f"{path} keeps its weights in the side file {location or '(unnamed)'!s}, "
                                     f"which is missing from {path.parent}; copy it beside the .onnx file or "
                                     "re-export the classifier as one file (export_classifier_onnx does)")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError, or a parse error from the C++ side
        raise FailatlasError(f"{path} is not a valid ONNX model: it is corrupt, truncated or malformed "
                             f"({_first_line(exc)}); re-export it with failatlas.deploy.export_classifier_onnx") from None
    # the input type, from the file: ONNX Runtime may not even open a float64 graph (no double kernels for
    # Conv), and then its message would point at the opset instead of the dtype
    weights = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in weights]
    if len(inputs) == 1 and inputs[0].type.HasField("tensor_type"):
        elem = inputs[0].type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT:
            name = onnx.TensorProto.DataType.Name(elem).lower()
            raise FailatlasError(f"the ONNX classifier {path} takes {name} input {inputs[0].name!r}; failatlas feeds "
                                 "float32 images: re-export it in float32 (model.float() before torch.onnx.export)")
    return {p.key: p.value for p in proto.metadata_props}, _is_quantized(proto), _is_dynamic(proto)


def _ops(proto: Any) -> list[str]:
    return [node.op_type for node in proto.graph.node] + [n.op_type for f in proto.functions for n in f.node]


def _is_dynamic(proto: Any) -> bool:
    """True when the graph quantizes its activations at run time (DynamicQuantizeLinear, DynamicQuantizeMatMul,
    ...: onnxruntime's quantize_dynamic): their scale comes from the whole batch, so an image's logits move a
    little with the rest of the batch, by design."""
    return any(op.startswith("DynamicQuantize") for op in _ops(proto))


def _is_quantized(proto: Any) -> bool:
    """True when the graph holds quantization operators (its outputs move in rounding steps): QDQ pairs,
    QOperator ops (QLinear*, QGemm, ...), integer ops (ConvInteger, MatMulInteger, MatMulIntegerToFloat) and
    ONNX Runtime's fused ones (DynamicQuantizeMatMul, ...), in the graph or a subgraph's functions."""
    ops = _ops(proto)
    return any("Quantize" in op or "Integer" in op or op.startswith(("QLinear", "QGemm", "QAttention"))
               for op in ops)


def _dim_text(dim: Any) -> str:
    return "N" if dim is None or isinstance(dim, str) else str(dim)


class OnnxClassifier(nn.Module):
    """An ONNX classifier run by ONNX Runtime, usable wherever failatlas expects a torch classifier.

    ``OnnxClassifier(path, providers=None, expected_classes=None, threads=None)``: ``path`` is a ``.onnx``
    file whose single input is float32 ``[N, 1, 28, 28]`` (intensities in [0, 1]) with a dynamic (symbolic)
    batch dimension N and whose output is ``[N, C]`` logits. ``providers``: ONNX Runtime execution providers
    (default ``["CPUExecutionProvider"]``); ``expected_classes``: refuse a model that does not predict that
    many classes; ``threads``: ONNX Runtime's intra-op threads (default: its own choice).

    Everything is checked once, here, and each problem raises one :class:`FailatlasError` saying how to fix it:
    a missing file, a corrupt / truncated / non-ONNX file, a missing external-weights file, another input
    shape or dtype, a fixed batch dimension, an output that is not ``[N, C]``, a class count that differs from
    ``expected_classes`` or from the file's ``num_classes`` metadata.

    ``classifier(x)``: ``x`` a float ``Tensor[N, 1, 28, 28]`` (any device) → float32 logits ``Tensor[N, C]``
    on ``x``'s device. The input is run as ``x.detach().cpu().float().contiguous().numpy()``.

    **Not differentiable**: ONNX Runtime computes no gradients, so gradient-based analyses (the gradient
    ranking, ``style_gradients``) cannot use it; calling it on an input that requires grad while autograd is
    enabled raises :class:`FailatlasError` instead of returning logits without a graph. Use the black-box
    (gradient-free) ranking, or wrap the call in ``torch.no_grad()`` when only the logits are needed.

    Attributes: ``path``, ``num_classes``, ``input_name``, ``output_name``, ``providers`` (those in use),
    ``quantized`` (the graph holds quantization operators: the black-box ranking then steps 1σ, not 0.1σ),
    ``metadata`` (the file's ``metadata_props``), ``config`` (a :class:`ClassifierConfig` with architecture
    ``"onnx"``, so the class-count checks of the analyses apply). The module holds no parameters, only a
    zero-size float32 CPU buffer, so the helpers that look for a dtype/device see float32 on the CPU. It is
    always in eval mode (``train()`` keeps it there). It has no ``penultimate`` features (no FD).
    """

    differentiable = False  # analysis code asks this to pick the black-box ranking


    def __init__(self, path: str | os.PathLike, providers: Sequence[Any] | None = None,
                 expected_classes: int | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.register_buffer("_anchor", torch.zeros(0, dtype=torch.float32), persistent=False)
        self.path = Path(path)
        self._providers_arg = None if providers is None else list(providers)
        self._threads = threads
        if expected_classes is not None and (isinstance(expected_classes, bool)
                                             or not isinstance(expected_classes, (int, np.integer))
                                             or expected_classes < 1):
            raise FailatlasError(f"expected_classes must be a positive integer, got {expected_classes!r}")
        self._expected_classes = None if expected_classes is None else int(expected_classes)
        self.metadata, self.quantized, self._dynamic = _validate_file(self.path)
        self._session = self._open_session()
        self._inspect()
        super().train(False)

    # -- loading ------------------------------------------------------------------------------------------

    def _open_session(self) -> Any:
        import onnxruntime as ort

        providers = self._providers_arg if self._providers_arg is not None else ["CPUExecutionProvider"]
        if not providers:
            raise FailatlasError("providers is empty; pass e.g. ['CPUExecutionProvider'] or leave it out")
        available = ort.get_available_providers()
        for p in providers:
            name = p[0] if isinstance(p, (tuple, list)) else p
            if name not in available:
                raise FailatlasError(f"ONNX Runtime execution provider {name!r} is not available in this "
                                     f"onnxruntime {ort.__version__}; available: {', '.join(available)}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self._threads is not None:
            if isinstance(self._threads, bool) or not isinstance(self._threads, int) or self._threads < 1:
                raise FailatlasError(f"threads must be a positive integer, got {self._threads!r}")
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise FailatlasError(f"ONNX Runtime {ort.__version__} cannot load {self.path} ({_first_line(exc)}); "
                                 "re-export it with an opset this ONNX Runtime supports, or upgrade onnxruntime") from None
        self.providers = list(session.get_providers())
        return session

    def _inspect(self) -> None:
        session, path = self._session, self.path
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise FailatlasError(f"the ONNX classifier {path} takes {len(inputs)} inputs "
                                 f"({', '.join(i.name for i in inputs)}); a classifier takes one: images "
                                 "[N, 1, 28, 28]. Re-export it with a single input")
        inp = inputs[0]
        shape = list(inp.shape) if inp.shape is not None else []
        shown = "[" + ", ".join(_dim_text(d) for d in shape) + "]"
        if len(shape) != 4 or any(isinstance(d, int) and d != want for d, want in zip(shape[1:], IN_SHAPE)):
            raise FailatlasError(f"the ONNX classifier {path} takes input {inp.name!r} of shape {shown}, but "
                                 "failatlas classifiers take [N, 1, 28, 28] (one-channel 28×28 images in [0, 1]); "
                                 "use a classifier for such images")
        if isinstance(shape[0], int):
            raise FailatlasError(f"the ONNX classifier {path} has a fixed batch size of {shape[0]} (input shape "
                                 f"{shown}); re-export it with a dynamic batch dimension (export_classifier_onnx "
                                 "does; with torch.onnx.export pass dynamic_shapes or dynamic_axes for dim 0)")
        if inp.type != "tensor(float)":
            raise FailatlasError(f"the ONNX classifier {path} takes {inp.type} input; failatlas feeds float32 "
                                 "images: re-export it with a float32 input")
        if len(outputs) != 1:
            raise FailatlasError(f"the ONNX classifier {path} has {len(outputs)} outputs "
                                 f"({', '.join(o.name for o in outputs)}); a classifier has one: logits [N, C]. "
                                 "Re-export it with the logits as the only output")
        out = outputs[0]
        if out.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise FailatlasError(f"the ONNX classifier {path} returns {out.type}; logits must be floating-point")
        oshape = list(out.shape) if out.shape is not None else []
        if len(oshape) != 2:
            oshown = "[" + ", ".join(_dim_text(d) for d in oshape) + "]"
            raise FailatlasError(f"the ONNX classifier {path} returns {out.name!r} of shape {oshown}; a classifier "
                                 "returns 2-D logits [N, C] (one row per image)")
        self.input_name, self.output_name = inp.name, out.name
        # one run on two blank images: catches graphs that only work at one batch size and finds C
        probe = self._run(np.zeros((2, *IN_SHAPE), dtype=np.float32))
        if probe.ndim != 2 or probe.shape[0] != 2 or probe.shape[1] < 1:
            raise FailatlasError(f"the ONNX classifier {path} returns shape {list(probe.shape)} for 2 images; "
                                 "it must return logits [N, C] with one row per image (re-export it with a "
                                 "dynamic batch dimension)")
        if not np.isfinite(probe).all():
            raise FailatlasError(f"the ONNX classifier {path} returns NaN or infinite logits for two blank images; "
                                 "its graph or weights are damaged: export it again")
        from ..analysis.population import check_not_probabilities

        x = np.random.default_rng(0).random((4, *IN_SHAPE), dtype=np.float32)
        together = self._run(x).astype(np.float64)
        check_not_probabilities(together, f"the ONNX classifier {path}")
        alone = np.concatenate([self._run(x[i:i + 1]) for i in range(len(x))]).astype(np.float64)
        if not self._dynamic and together.shape == alone.shape and np.isfinite(together).all() and \
                np.abs(together - alone).max() > _BATCH_RTOL * max(1.0, float(np.abs(together).max())):
            raise FailatlasError(f"the ONNX classifier {path} gives an image other logits depending on the rest of "
                                 "the batch (exported with BatchNorm or dropout in training mode?); export it from "
                                 "a model in eval mode (model.eval() before torch.onnx.export)")
        num_classes = int(probe.shape[1])
        declared = self.metadata.get("num_classes")
        if declared is not None and declared.strip() != str(num_classes):
            raise FailatlasError(f"{path} says num_classes={declared!r} in its metadata but returns {num_classes} "
                                 "logits; the file is inconsistent: re-export it")
        if self._expected_classes is not None and num_classes != self._expected_classes:
            raise FailatlasError(f"the ONNX classifier {path} predicts {num_classes} classes but "
                                 f"{self._expected_classes} are expected (the generator's or dataset's classes); "
                                 f"use a classifier trained on those {self._expected_classes} classes")
        self.num_classes = num_classes
        self.config = self._make_config()

    def _make_config(self) -> Any:
        return file_classifier_config(self.metadata, self.num_classes, "onnx", self.path)

    # -- running ------------------------------------------------------------------------------------------

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self._session.run([self.output_name], {self.input_name: x})[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's Fail/InvalidArgument/RuntimeException...
            raise FailatlasError(f"ONNX Runtime failed to run the ONNX classifier {self.path} on a batch of "
                                 f"{list(x.shape)} ({_first_line(exc)}); check that it is a classifier of "
                                 "[N, 1, 28, 28] images with a dynamic batch dimension") from None
        return np.asarray(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``Tensor[N, 1, 28, 28]`` in [0, 1] → float32 logits ``Tensor[N, C]`` on ``x``'s device."""
        check_images(x, "the ONNX classifier")
        if x.requires_grad and torch.is_grad_enabled():
            raise FailatlasError("the ONNX classifier is not differentiable (ONNX Runtime computes no gradients): "
                                 "use the black-box ranking instead of gradients, or call it under "
                                 "torch.no_grad() when only the logits are needed")
        if x.shape[0] == 0:
            return torch.zeros(0, self.num_classes, dtype=torch.float32, device=x.device)
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        logits = self._run(array)
        if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise FailatlasError(f"the ONNX classifier {self.path} returned shape {list(logits.shape)} for "
                                 f"{x.shape[0]} images; expected logits [N, {self.num_classes}]")
        result = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        return result if x.device.type == "cpu" else result.to(x.device)

    def train(self, mode: bool = True) -> "OnnxClassifier":
        """Always eval mode: the ONNX graph is an inference graph (BatchNorm folded into the convolutions)."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, num_classes={self.num_classes}, providers={self.providers}"

    # copies (copy.deepcopy, pickling) reopen the file instead of copying the ONNX Runtime session
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._session = self._open_session()


def load_any_classifier(path_or_name: str | os.PathLike, *, providers: Sequence[Any] | None = None,
                        expected_classes: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """A classifier from a file or a folder, by the name's suffix: ``.onnx`` → :class:`OnnxClassifier`
    (ONNX Runtime), ``.pt`` (TorchScript) or ``.pt2`` (``torch.export``) →
    :class:`~failatlas.deploy.torch_classifier.TorchFileClassifier`; anything else (a classifier folder or a
    shipped model name such as ``"mnist/classifier-clean"``) → :func:`failatlas.models.classifier.load_classifier`.

    ``providers`` apply to ONNX files only, ``device`` to torch classifiers (folders and .pt/.pt2 files).
    ``expected_classes`` is checked for all.
    """
    from .._paths import resolve_model
    from ..models.classifier import load_classifier
    from .torch_classifier import TorchFileClassifier, classifier_file_format

    fmt = classifier_file_format(path_or_name)
    if fmt == "onnx":
        return OnnxClassifier(path_or_name, providers=providers, expected_classes=expected_classes)
    if fmt is not None:
        return TorchFileClassifier(path_or_name, expected_classes=expected_classes).to(device)
    model = load_classifier(resolve_model(path_or_name), device=device)
    if expected_classes is not None and model.config.num_classes != int(expected_classes):
        raise FailatlasError(f"the classifier {path_or_name} predicts {model.config.num_classes} classes but "
                             f"{expected_classes} are expected (the generator's or dataset's classes); use a "
                             f"classifier trained on those {expected_classes} classes")
    return model


def evaluate_any_classifier(path_or_name: str | os.PathLike, *, device: str = "cpu", **kwargs: Any) -> dict[str, Any]:
    """:func:`failatlas.training.classifier.evaluate_classifier` (accuracy on a real test split, per corruption
    cell) for a classifier given as a folder, a shipped name or a file (``.onnx``, ``.pt``, ``.pt2``): the
    check that a model of your own reads failatlas's images (float ``[N, 1, 28, 28]`` in [0, 1]) as it should."""
    from .._paths import classifier_file_format, data_to_judge
    from ..training.classifier import evaluate_classifier

    data = data_to_judge(path_or_name, kwargs.pop("dataset", None), kwargs.pop("idx_dir", None),
                         kwargs.pop("blur", None))
    kwargs.update(dataset=data["dataset"], idx_dir=data["idx_dir"], blur=data["blur"])
    model = load_any_classifier(path_or_name, device=device) if classifier_file_format(path_or_name) else path_or_name
    return evaluate_classifier(model, device=device, **kwargs)
