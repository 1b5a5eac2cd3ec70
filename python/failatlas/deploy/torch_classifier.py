"""Classifiers as TorchScript (``.pt``) or ``torch.export`` (``.pt2``) files, as they are often deployed.

* :func:`export_classifier_torchscript` / :func:`export_classifier_program` write a classifier as one file
  (float32, dynamic batch, input ``[N, 1, 28, 28]`` in [0, 1] → logits ``[N, C]``), with the same metadata
  as an ONNX export (``num_classes``, ``class_names``, ...) in a JSON extra file, ``failatlas.json``.
* :class:`TorchFileClassifier` loads any such file (written here or by the user's own
  ``torch.jit.script``/``trace`` + ``torch.jit.save``, or ``torch.export.save``) and validates it once, at load
  time. Unlike an ONNX classifier it is **differentiable**: the gradient ranking runs through it.

What a file must be: one input, float images ``[N, 1, 28, 28]`` with intensities in [0, 1] (any
normalization happens inside the model), a dynamic batch, and one output, logits ``[N, C]``; saved in eval
mode (a model whose output for one image depends on the other images of the batch, as BatchNorm in training
mode does, is refused). Loading never unpickles Python objects: a TorchScript archive holds TorchScript code
and tensors only, and a ``.pt2`` archive is read first and refused if anything in it would be unpickled or
loaded as compiled code (:func:`failatlas.engine.fused.read_program`). A ``torch.save`` file (a pickled model
or state dict, often also named ``.pt``) is refused with the ways to save the model instead. Either format is
still a program whose operations run when it is called (an op can read or write a file): load only files
you trust; ONNX is the format to take from strangers.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .. import _torchscript
from .._io import write_bytes
from .._paths import classifier_file_format
from ..analysis.population import check_not_probabilities
from ..errors import FailatlasError, error_line
from .onnx_classifier import (IN_SHAPE, _check_out_file, _first_line, _quiet_exporter, check_images,
                              classifier_metadata, file_classifier_config, prepare_export)

__all__ = ["TorchFileClassifier", "export_classifier_program", "export_classifier_torchscript", "META_FILE",
           "classifier_file_format"]

#: the JSON extra file holding the metadata of an exported TorchScript / torch.export classifier
META_FILE = "failatlas.json"
#: an exported file must reproduce the eager logits within this, relative to max(1, |largest logit|)
EXPORT_RTOL = 1e-4
_CHECK_BATCHES = (1, 4)   # batch sizes an export is checked at (it is traced at 3)
_PROBE_RTOL = 1e-4        # batch-independence probe at load time, relative to max(1, |largest logit|)


# ---------------------------------------------------------------------------------------------- export

def export_classifier_torchscript(classifier: nn.Module | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``classifier`` (a module of ``[N, 1, 28, 28]`` images in [0, 1] → logits, a classifier folder or a
    shipped name) as a traced TorchScript file (``.pt``) with a dynamic batch; returns ``path``.

    A float32 CPU copy in eval mode is traced, checked against the eager model at batch sizes 1 and 4, and
    written atomically; the metadata (:func:`~failatlas.deploy.onnx_classifier.classifier_metadata`) travels
    in the archive as the extra file ``failatlas.json``. Load it with :class:`TorchFileClassifier` (or
    ``torch.jit.load``)."""
    path = _check_out_file(path, ".pt", "TorchScript classifier")
    model, config, example, reference, num_classes = prepare_export(classifier)
    try:
        traced = _torchscript.trace(model, (example,), check_trace=False)
    except Exception as exc:  # noqa: BLE001 - tracing errors come in many types
        raise FailatlasError(f"cannot trace the classifier to TorchScript ({_first_line(exc)}); export it to "
                             "ONNX or torch.export instead") from None
    _verify(model, traced, "traced TorchScript classifier")
    meta = classifier_metadata(config, num_classes, "torch.jit.trace")
    _torchscript.save(traced, path, extra_files={META_FILE: json.dumps(meta)})
    return path


def export_classifier_program(classifier: nn.Module | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write ``classifier`` as a ``torch.export`` program (``.pt2``, batch dimension ``Dim("batch")``);
    returns ``path``. Checked against the eager model like :func:`export_classifier_torchscript`; the metadata
    is the archive's extra file ``failatlas.json``. Load it with :class:`TorchFileClassifier` (or
    ``torch.export.load(path).module()``)."""
    path = _check_out_file(path, ".pt2", "torch.export classifier")
    model, config, example, reference, num_classes = prepare_export(classifier)
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},), strict=False)
    except Exception as exc:  # noqa: BLE001 - export errors come in many types
        raise FailatlasError(f"torch.export cannot export the classifier ({_first_line(exc)}); export it to "
                             "TorchScript or ONNX instead") from None
    _verify(model, program.module(), "exported classifier program")
    meta = classifier_metadata(config, num_classes, "torch.export.export")
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={META_FILE: json.dumps(meta)})
    write_bytes(path, buffer.getvalue())
    return path


def _verify(model: nn.Module, graph: Callable[[torch.Tensor], torch.Tensor], what: str) -> None:
    """Check ``graph`` against the eager ``model`` at batch sizes other than the traced one, so that a file
    with a baked-in batch size or another output is never written."""
    gen = torch.Generator().manual_seed(1)
    for n in _CHECK_BATCHES:
        x = torch.rand(n, *IN_SHAPE, generator=gen)
        with torch.no_grad():
            want = model(x)
            try:
                got = graph(x)
            except Exception as exc:  # noqa: BLE001
                raise FailatlasError(f"the {what} fails at batch size {n} ({_first_line(exc)}); it does not take a "
                                     "dynamic batch: export it to ONNX instead") from None
        tol = EXPORT_RTOL * max(1.0, float(want.abs().max()))
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or not float((got - want).abs().max()) <= tol:
            raise FailatlasError(f"the {what} disagrees with the eager classifier at batch size {n} (data-dependent "
                                 "control flow that tracing cannot record?); export it to ONNX or torch.export instead")


# ---------------------------------------------------------------------------------------------- loading

def _zip_names(path: Path) -> set[str] | None:
    """The entry names of a zip archive without their top folder, or None for a file that is not a zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            return {n.split("/", 1)[1] if "/" in n else n for n in archive.namelist()}
    except (zipfile.BadZipFile, OSError):
        return None


def _kind(path: Path) -> str | None:
    """What a model file really is, whatever its suffix: ``"torch.save"`` (a pickle: a zip with ``data.pkl``
    and no ``constants.pkl``, or the legacy format, which starts with pickle's PROTO opcode),
    ``"torchscript"`` (``constants.pkl`` and ``code/``), ``"torch.export"`` (``archive_format``), or None."""
    names = _zip_names(path)
    if names is None:
        with open(path, "rb") as f:
            return "torch.save" if f.read(1) == b"\x80" else None
    if "archive_format" in names:
        return "torch.export"
    if "constants.pkl" in names and any(n.startswith("code/") for n in names):
        return "torchscript"
    return "torch.save" if "data.pkl" in names else None


def _check_kind(path: Path, want: str) -> None:
    """Refuse a torch.save pickle unread, and name a TorchScript / torch.export file saved under the other's
    suffix (the suffix decides how a file is loaded)."""
    kind = _kind(path)
    names = {"torchscript": "TorchScript", "torch.export": "a torch.export program"}
    if kind == "torch.save":
        raise FailatlasError(
            f"{path} is a torch.save file (a pickled Python object), not {names[want]}; failatlas never unpickles files "
            "(that can run any code). Save the model as TorchScript (torch.jit.save(torch.jit.script(model) or "
            "torch.jit.trace(model, images), 'model.pt')), as a torch.export program (.pt2) or as ONNX (.onnx), "
            "in eval mode")
    if kind is not None and kind != want:
        suffix = ".pt" if kind == "torchscript" else ".pt2"
        raise FailatlasError(f"{path} is {names[kind].replace('TorchScript', 'a TorchScript file')} saved under the "
                             f"suffix {path.suffix}; rename it to "
                             f"{path.with_suffix(suffix).name} (the suffix decides how failatlas loads it)")


def _load_torchscript(path: Path) -> tuple[nn.Module, dict[str, str]]:
    _check_kind(path, "torchscript")
    extra = {META_FILE: ""}
    module = _torchscript.load_torchscript(path, "TorchScript classifier", extra_files=extra)
    if hasattr(module, "meta_style_dim"):
        raise _fused_graph(path)
    return module, _parse_meta(extra[META_FILE], path)


def _load_program(path: Path) -> tuple[nn.Module, dict[str, str]]:
    from ..engine.fused import load_program

    _check_kind(path, "torch.export")
    program, module, extra = load_program(path, "torch.export classifier", "save the classifier again with "
                                          "torch.export.save (weights as tensors), as TorchScript or as ONNX")
    if "meta_style_dim" in {**program.state_dict, **program.constants}:
        raise _fused_graph(path)
    return module, _parse_meta(extra.get(META_FILE, ""), path)


def _fused_graph(path: Path) -> FailatlasError:
    return FailatlasError(f"{path} is a failatlas fused graph (styles → logits), not a classifier of images; "
                          f"pass the classifier file of the same export folder (classifier{path.suffix}), or run "
                          "fused graphs with failatlas-eval / failatlas.engine.load_fused")


def _parse_meta(text: str | bytes, path: Path) -> dict[str, str]:
    if not text:
        return {}  # a file saved by the user: no failatlas metadata
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise FailatlasError(f"{path} holds a damaged {META_FILE} (not a JSON object); export the classifier again")
    return {str(k): str(v) for k, v in meta.items()}


class TorchFileClassifier(nn.Module):
    """A classifier saved as TorchScript (``.pt``) or a ``torch.export`` program (``.pt2``), usable wherever
    failatlas expects a torch classifier, gradients included.

    ``TorchFileClassifier(path, expected_classes=None)``: the format comes from the suffix. Everything is
    checked once, here, and each problem raises one :class:`FailatlasError` naming the fix: a missing, empty or
    unreadable file, a ``torch.save`` pickle, a ``.pt2`` that would unpickle anything, a failatlas fused graph
    given instead of the classifier, a model that fails on ``[N, 1, 28, 28]`` images or does not return
    ``[N, C]`` logits, NaN logits, an output for one image that depends on the rest of the batch (saved in
    training mode), a class count that differs from ``expected_classes`` or from the file's metadata.

    ``classifier(x)``: ``x`` a float ``Tensor[N, 1, 28, 28]`` in [0, 1] → float32 logits ``Tensor[N, C]`` on
    ``x``'s device, differentiable with respect to ``x``. Attributes: ``path``, ``format`` (``"torchscript"``
    or ``"torch.export"``), ``num_classes``, ``metadata`` (the exporter's ``failatlas.json``, empty for files
    saved elsewhere), ``config`` (a :class:`ClassifierConfig` with architecture ``"torchscript"`` or
    ``"torch.export"``) and ``model``, the loaded module (float32, CPU, parameters without gradients). Always
    in eval mode. No ``penultimate`` features (no FD).
    """

    differentiable = True

    def __init__(self, path: str | os.PathLike, expected_classes: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        fmt = classifier_file_format(self.path)
        if fmt not in ("torchscript", "torch.export"):
            raise FailatlasError(f"{self.path}: a TorchScript classifier ends in .pt, a torch.export one in .pt2")
        if expected_classes is not None and (isinstance(expected_classes, bool) or not isinstance(expected_classes, int)
                                             or expected_classes < 1):
            raise FailatlasError(f"expected_classes must be a positive integer, got {expected_classes!r}")
        self.format = fmt
        self._check_file()
        module, self.metadata = (_load_torchscript if fmt == "torchscript" else _load_program)(self.path)
        for p in module.parameters():
            p.requires_grad_(False)
        for sub in module.modules():  # an exported program refuses eval() but its graph is fixed: flag only
            sub.training = False
        self.model = module
        self._input_dtype: torch.dtype | None = None  # set by the probe for a model with no floating tensor
        self.training = False  # an exported program cannot switch modes; train() below never recurses
        self.num_classes = self._probe(expected_classes)
        self.config = self._make_config()

    def _check_file(self) -> None:
        what = "TorchScript" if self.format == "torchscript" else "torch.export"
        if not self.path.exists():
            raise FailatlasError(f"{what} classifier not found: {self.path}; check the path (failatlas export writes "
                                 f"classifier{self.path.suffix} into its --out folder)")
        if not self.path.is_file():
            raise FailatlasError(f"{self.path} is not a file; pass the {self.path.suffix} file of the classifier")
        if self.path.stat().st_size == 0:
            raise FailatlasError(f"{self.path} is empty, not a {what} file; save the classifier again")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The model on ``x`` (cast to its parameters' dtype and device), with the output checked."""
        ref = self._reference_tensor()
        if ref is not None:
            x = x.to(device=ref.device, dtype=ref.dtype)
        elif self._input_dtype is not None:
            x = x.to(dtype=self._input_dtype)
        try:
            out = self.model(x)
        except (MemoryError, torch.OutOfMemoryError):  # out of memory is no input problem
            raise
        except Exception as exc:  # noqa: BLE001 - a user's graph can fail in any way
            raise FailatlasError(f"the classifier {self.path} fails on a batch of {list(x.shape)} images "
                                 f"({error_line(exc)}); failatlas feeds float32 images [N, 1, 28, 28] with "
                                 "intensities in [0, 1]: save a model that takes them (reshape or normalize "
                                 "inside it)") from None
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 1:
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise FailatlasError(f"the classifier {self.path} returns {got} for {x.shape[0]} images; it must return "
                                 "one tensor of logits [N, num_classes]")
        if not out.is_floating_point():
            raise FailatlasError(f"the classifier {self.path} returns {out.dtype}; logits must be floating-point")
        return out

    def _probe(self, expected: int | None) -> int:
        """Run the model on seeded images once: shape, finiteness, batch independence, class count."""
        x = torch.rand(3, *IN_SHAPE, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            together = None
            try:
                together = self._run(x).float()
            except FailatlasError:
                if not self._find_input_dtype(x):
                    self._check_fixed_batch(x)
                    raise
            if together is None:  # it wants another float dtype: run it again (outside the handler above)
                together = self._run(x).float()
            alone = torch.cat([self._run(x[i:i + 1]).float() for i in range(3)])
            again = self._run(x).float()
        if not bool(torch.isfinite(together).all()):
            raise FailatlasError(f"the classifier {self.path} returns NaN or infinite logits for images in [0, 1]; "
                                 "its weights are damaged: save it again")
        check_not_probabilities(together, f"the classifier {self.path}")
        tol = _PROBE_RTOL * max(1.0, float(together.abs().max()))
        if float((together - alone).abs().max()) > tol or float((together - again).abs().max()) > tol:
            raise FailatlasError(f"the classifier {self.path} gives an image other logits depending on the rest of "
                                 "the batch or from one call to the next (BatchNorm or dropout in training mode); "
                                 "call model.eval() before saving it")
        num_classes = int(together.shape[1])
        declared = self.metadata.get("num_classes")
        if declared is not None and declared.strip() != str(num_classes):
            raise FailatlasError(f"{self.path} says num_classes={declared!r} in its {META_FILE} but returns "
                                 f"{num_classes} logits; the file is inconsistent: export it again")
        if expected is not None and num_classes != expected:
            raise FailatlasError(f"the classifier {self.path} predicts {num_classes} classes but {expected} are "
                                 f"expected (the generator's or dataset's classes); use a classifier trained on "
                                 f"those {expected} classes")
        return num_classes

    def _find_input_dtype(self, x: torch.Tensor) -> bool:
        """A model without floating parameters or buffers (a frozen TorchScript module keeps its weights as
        graph constants) may want another float dtype than float32: find it by running it once."""
        if self._reference_tensor() is not None:
            return False
        for dtype in (torch.float64, torch.bfloat16, torch.float16):
            try:
                out = self.model(x.to(dtype))
            except Exception:  # noqa: BLE001 - only a success tells something here
                continue
            if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == x.shape[0]:
                self._input_dtype = dtype
                return True
        return False

    def _reference_tensor(self) -> torch.Tensor | None:
        """The first floating parameter or buffer (a frozen TorchScript module keeps its weights as buffers or
        constants): the model's dtype and device, which inputs are cast to."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            if tensor.is_floating_point():
                return tensor
        return None

    def _check_fixed_batch(self, x: torch.Tensor) -> None:
        """After a failure at batch 3: a model that runs at another batch size was saved with a fixed one."""
        ref = self._reference_tensor()
        dtype = ref.dtype if ref is not None else x.dtype
        for n in (1, 2, 4, 8, 16, 32, 64):
            try:
                out = self.model(torch.zeros(n, *IN_SHAPE, dtype=dtype))
            except Exception:  # noqa: BLE001 - only a success tells something here
                continue
            if not (isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n):
                continue
            raise FailatlasError(f"the classifier {self.path} runs on a batch of {n} images only; save it with a "
                                 "dynamic batch (torch.export: dynamic_shapes=({0: torch.export.Dim('batch')},); "
                                 "TorchScript: torch.jit.script, or a trace that does not bake the batch size in)"
                                 ) from None

    def _make_config(self) -> Any:
        return file_classifier_config(self.metadata, self.num_classes, self.format, self.path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float ``Tensor[N, 1, 28, 28]`` in [0, 1] → float32 logits ``Tensor[N, C]`` on ``x``'s device."""
        check_images(x, f"the classifier {self.path.name}")
        if x.shape[0] == 0:  # an exported program's batch dimension starts at 1
            return torch.zeros(0, self.num_classes, dtype=torch.float32, device=x.device)
        return self._run(x).to(device=x.device, dtype=torch.float32)

    def train(self, mode: bool = True) -> "TorchFileClassifier":
        """Always eval mode (the file is an inference graph; an exported program cannot switch modes)."""
        self.training = False
        return self

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, format={self.format!r}, num_classes={self.num_classes}"

    def __deepcopy__(self, memo: dict[int, Any]) -> "TorchFileClassifier":
        # the analyses copy classifiers (frozen copies for fused graphs); copying an exported program's module
        # makes torch warn about its own deprecated pytree API, which is not the user's to act on
        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(treespec|LeafSpec).*")
            for key, value in self.__dict__.items():
                clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone
