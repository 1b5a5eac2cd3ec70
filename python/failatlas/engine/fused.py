"""The fused graph: StyleSpace vector → synthesis → adapter → classifier → logits, as one module.

``s: Tensor[N, dim S]`` (float32, CPU) → ``logits: Tensor[N, num_classes]``, with the generator's
deterministic ``"const"`` noise, so the same ``s`` always gives the same logits.

* :class:`FusedModel` is the eager module (frozen copies of the synthesis network and the classifier).
* :func:`export_torchscript` writes it as a traced TorchScript archive (``.pt``) that a C++ program can run.
* :func:`export_program` writes it as a ``torch.export`` program (``.pt2``).
* :func:`load_fused` reads either back as a :class:`FusedGraph`, a callable that checks its input.

Both files take any batch size: the batch dimension is dynamic (traced as ``s.size(0)`` in TorchScript,
``Dim("batch")`` in the exported program). Each export checks itself against the eager module at two
batch sizes other than the example's before it writes the file.

Each file also holds two scalar int64 buffers, ``meta_style_dim`` and ``meta_num_classes``, so that
:func:`load_fused` knows the style width a graph expects and can refuse a wrong one with a clear message.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import _torchscript
from .._io import write_bytes
from ..errors import FailatlasError, error_line
from ..models.adapter import classifier_view

__all__ = ["FusedModel", "FusedGraph", "export_torchscript", "export_program", "load_fused",
           "TORCHSCRIPT_SUFFIX", "PROGRAM_SUFFIX"]

TORCHSCRIPT_SUFFIX = ".pt"
PROGRAM_SUFFIX = ".pt2"
EXPORT_NOISE_MODES = ("const", "none")  # deterministic modes only: an exported graph must be reproducible

_EXAMPLE_BATCH = 5        # the batch size the graph is traced/exported at
_CHECK_BATCHES = (1, 3)   # ... and the sizes it is checked at (other than the example's)
_CHECK_RTOL = 1e-4        # relative to the largest logit: the graphs run the same kernels as eager


class FusedModel(nn.Module):
    """StyleSpace vector → logits: ``classifier(classifier_view(G.synthesis_network(s, noise_mode)))``.

    ``forward(s)``: Tensor[N, dim S] float32 → logits Tensor[N, num_classes]. ``forward`` runs no input
    checks (they would break tracing and export); :class:`FusedGraph` checks inputs for loaded graphs.

    The module holds float32 CPU copies of ``G``'s synthesis network and of ``classifier``, in eval mode
    (``train()`` keeps it there) and with ``requires_grad`` off, so later changes to ``G`` or
    ``classifier`` do not reach it. Gradients with respect to ``s`` still flow.
    """

    def __init__(self, G: nn.Module, classifier: nn.Module, noise_mode: str = "const") -> None:
        super().__init__()
        from ..models.stylegan2 import NOISE_MODES

        if not hasattr(G, "synthesis_network") or not hasattr(G, "style_dim"):
            raise FailatlasError(f"FusedModel needs a failatlas StyleGAN2 Generator, got {type(G).__name__}; "
                                 "load one with failatlas.load_generator(path)")
        if not isinstance(classifier, nn.Module):
            raise FailatlasError(f"FusedModel needs a classifier nn.Module, got {type(classifier).__name__}; "
                                 "load one with failatlas.models.classifier.load_classifier(folder)")
        if noise_mode not in NOISE_MODES:
            raise FailatlasError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        self.noise_mode = noise_mode
        self.synthesis = _frozen_copy(G.synthesis_network)
        self.classifier = _frozen_copy(classifier)
        self.style_dim = int(G.style_dim)
        with torch.no_grad():
            try:
                probe = self(torch.zeros(2, self.style_dim))
            except RuntimeError as exc:
                raise FailatlasError(
                    "the classifier does not accept the generator's images as [N, 1, 28, 28] classifier inputs "
                    f"({_first_line(exc)}); use a classifier for 28×28 one-channel images") from None
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise FailatlasError(f"the classifier must return logits of shape [N, num_classes], got "
                                 f"{list(probe.shape)} for N = 2")
        self.num_classes = int(probe.shape[1])
        self.register_buffer("meta_style_dim", torch.tensor(self.style_dim, dtype=torch.int64))
        self.register_buffer("meta_num_classes", torch.tensor(self.num_classes, dtype=torch.int64))
        self.eval()

    def train(self, mode: bool = True) -> "FusedModel":
        """Always eval mode: the fused graph is for analysis (BatchNorm uses its running statistics)."""
        return super().train(False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """s: Tensor[N, dim S] → logits Tensor[N, num_classes] (no checks; see the class docstring)."""
        images = self.synthesis(s, self.noise_mode)        # [N, 1, 32, 32] in about [-1, 1]
        return self.classifier(classifier_view(images))    # [N, 1, 28, 28] in [0, 1] → [N, K]


class FusedGraph:
    """A loaded fused graph: ``graph(s)`` with s: Tensor[N, style_dim] → logits Tensor[N, num_classes].

    Unlike :class:`FusedModel`, calling it checks ``s`` first (a tensor of shape [N, style_dim]; it is
    converted to float32 on the CPU) and raises :class:`FailatlasError` otherwise.

    Attributes: ``path``, ``format`` (``"torchscript"`` or ``"export"``), ``style_dim``, ``num_classes``
    and ``module``, the loaded module itself (no input checks).
    """

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], path: Path, format: str,
                 style_dim: int, num_classes: int) -> None:
        self.module, self.path, self.format = module, path, format
        self.style_dim, self.num_classes = style_dim, num_classes

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        if not isinstance(s, torch.Tensor):
            raise FailatlasError(f"the fused graph {self.path.name} takes styles as a torch.Tensor of shape "
                                 f"[N, {self.style_dim}], got {type(s).__name__}")
        if s.ndim != 2 or s.shape[1] != self.style_dim:
            raise FailatlasError(
                f"the fused graph {self.path} expects styles of shape [N, {self.style_dim}], got {list(s.shape)}; "
                "use styles from the generator this graph was exported from (or export the graph again)")
        if not (s.dtype.is_floating_point):
            raise FailatlasError(f"styles must be floating point, got {s.dtype}")
        return self.module(s.to(device="cpu", dtype=torch.float32))

    def __repr__(self) -> str:
        return (f"FusedGraph({str(self.path)!r}, format={self.format!r}, style_dim={self.style_dim}, "
                f"num_classes={self.num_classes})")


def export_torchscript(G: nn.Module, classifier: nn.Module, path: str | Path, *,
                       noise_mode: str = "const") -> Path:
    """Trace ``FusedModel(G, classifier, noise_mode)`` and save it atomically as TorchScript at ``path``
    (``.pt``). The traced graph takes s: Tensor[N, dim S] with any N and returns Tensor[N, num_classes].
    Returns ``path``."""
    path = _check_suffix(path, TORCHSCRIPT_SUFFIX, "export_torchscript")
    model = _export_model(G, classifier, noise_mode)
    example = _example_styles(model, _EXAMPLE_BATCH)
    traced = _torchscript.trace(model, (example,), check_trace=False)
    _verify(model, traced, "traced TorchScript graph")
    _torchscript.save(traced, path)
    return path


def export_program(G: nn.Module, classifier: nn.Module, path: str | Path, *,
                   noise_mode: str = "const") -> Path:
    """Export ``FusedModel(G, classifier, noise_mode)`` with ``torch.export.export`` (the batch dimension
    dynamic as ``Dim("batch")``) and save it atomically with ``torch.export.save`` at ``path`` (``.pt2``).
    Load it with :func:`load_fused` or ``torch.export.load(path).module()``: s: Tensor[N, dim S] →
    Tensor[N, num_classes]. Returns ``path``."""
    path = _check_suffix(path, PROGRAM_SUFFIX, "export_program")
    model = _export_model(G, classifier, noise_mode)
    example = _example_styles(model, _EXAMPLE_BATCH)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes={"s": {0: batch}}, strict=False)
    except Exception as exc:  # export errors come in many types; none is the user's to debug here
        raise FailatlasError(f"torch.export could not export the fused graph ({_first_line(exc)}); "
                             f"use export_torchscript for a {TORCHSCRIPT_SUFFIX} file instead") from None
    _verify(model, program.module(), "exported program")
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    write_bytes(path, buffer.getvalue())
    return path


def load_fused(path: str | Path) -> FusedGraph:
    """Load a fused graph written by :func:`export_torchscript` (``.pt``) or :func:`export_program`
    (``.pt2``) as a :class:`FusedGraph`: s: Tensor[N, style_dim] → logits Tensor[N, num_classes].

    A missing or unreadable file, or a file that is not a fused graph, raises :class:`FailatlasError`."""
    path = Path(path)
    if path.suffix not in (TORCHSCRIPT_SUFFIX, PROGRAM_SUFFIX):
        raise FailatlasError(f"fused graph {path}: the name must end in {TORCHSCRIPT_SUFFIX} (TorchScript) or "
                             f"{PROGRAM_SUFFIX} (torch.export program)")
    if not path.is_file():
        raise FailatlasError(f"fused graph not found: {path}; write one with export_torchscript or export_program")
    if path.suffix == TORCHSCRIPT_SUFFIX:
        module = _torchscript.load_torchscript(path, "fused graph")
        meta = {name: getattr(module, name, None) for name in ("meta_style_dim", "meta_num_classes")}
        fmt = "torchscript"
    else:
        program, module, _ = load_program(path, "fused graph", "export it again with export_program")
        state = {**program.state_dict, **program.constants}
        meta = {name: state.get(name) for name in ("meta_style_dim", "meta_num_classes")}
        fmt = "export"
    if not all(isinstance(v, torch.Tensor) and v.numel() == 1 for v in meta.values()):
        raise FailatlasError(f"{path} is not a failatlas fused graph (it has no style width recorded); "
                             "write one with export_torchscript or export_program")
    return FusedGraph(module, path, fmt, int(meta["meta_style_dim"]), int(meta["meta_num_classes"]))


# --- helpers -----------------------------------------------------------------------------------------


class _PickleRefused(Exception):
    pass


#: what a ``.pt2`` archive may hold, relative to its root folder: the program (JSON), raw tensors, sample
#: inputs, extra files and the format markers. Anything else (AOTInductor libraries, other formats) is refused.
_PT2_FILES = ("archive_format", "archive_version", "byteorder")
_PT2_FOLDERS = (".data/", "models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")


def _check_no_pickles(path: Path) -> None:
    """Refuse a ``.pt2`` archive that torch's loader would unpickle anything from, or run code from. It unpickles
    weights or constants whose config says ``use_pickle``, custom and opaque objects among the constants,
    sample inputs that fail a weights-only load (falling back to ``weights_only=False``), and the files of the
    older archive format; it loads AOTInductor shared libraries. Ours hold a JSON program, raw tensors and
    plain sample inputs only, so every entry must sit under the one root folder in one of the places listed
    in ``_PT2_FILES`` / ``_PT2_FOLDERS``. The archive is read here before torch sees it (nothing in the
    process is patched); :func:`read_program` then calls the current-format reader directly, never the
    fallback to the older format."""
    import json
    import re
    import zipfile

    from torch.export.pt2_archive import constants as pt2

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(set(names)) != len(names):  # this reader takes the last of two equal names, torch's the first
            raise _PickleRefused("entries with the same name")
        roots = [n[: -len(pt2.ARCHIVE_FORMAT_PATH)] for n in names if n.endswith("/" + pt2.ARCHIVE_FORMAT_PATH)]
        if len(roots) != 1:
            raise _PickleRefused("not the current torch.export archive format")
        root = roots[0]
        for name in names:
            if not name.startswith(root):
                raise _PickleRefused(f"{name} lies outside the archive's folder {root}")
            rel = name[len(root):]
            base = rel.rsplit("/", 1)[-1]
            if not (rel in _PT2_FILES or rel.startswith(_PT2_FOLDERS)) or (rel.startswith("models/")
                                                                           and not rel.endswith(".json")):
                raise _PickleRefused(f"unexpected entry {rel}")
            # weights and constants: raw tensors (weight_<n>, tensor_<n>) and their JSON configs; torch's
            # reader would prefer a <model>.pt there, which it unpickles
            if rel.startswith((pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR)) and not (
                    base.endswith(".json") or re.fullmatch(r"(weight|tensor)_\d+", base)
                    or base.startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX,
                                        getattr(pt2, "OPAQUE_OBJ_FILENAME_PREFIX", pt2.CUSTOM_OBJ_FILENAME_PREFIX)))):
                raise _PickleRefused(f"unexpected entry {rel}")
            if rel.startswith((pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR)) and base.endswith(".json"):
                try:
                    config = json.loads(archive.read(name)).get("config", {})
                except (ValueError, AttributeError):
                    raise _PickleRefused(f"{rel} is not a JSON object") from None
                for key, meta in (config.items() if isinstance(config, dict) else ()):
                    if not isinstance(meta, dict) or meta.get("use_pickle"):
                        raise _PickleRefused(f"{key!r} in {rel}")
            elif rel.startswith(pt2.CONSTANTS_DIR) and base.startswith(
                    (pt2.CUSTOM_OBJ_FILENAME_PREFIX, getattr(pt2, "OPAQUE_OBJ_FILENAME_PREFIX", pt2.CUSTOM_OBJ_FILENAME_PREFIX))):
                raise _PickleRefused(rel)
            elif rel.startswith("extra/"):  # torch keeps extra files as text and would fail to decode
                try:
                    archive.read(name).decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(f"the extra file {rel} is not text (torch.export writes extra files as "
                                     "UTF-8 text), so this file was not written by torch.export.save") from None
            elif rel.startswith(pt2.SAMPLE_INPUTS_DIR):
                try:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
                except Exception:
                    raise _PickleRefused(rel) from None


def load_program(path: Path, what: str, fix: str) -> tuple["torch.export.ExportedProgram", nn.Module, dict[str, str]]:
    """:func:`read_program` and the program's module, or one :class:`FailatlasError` naming ``what`` the file
    was to be (e.g. "fused graph") and ``fix``, the way to get a good file."""
    try:
        program, extra = read_program(path)
        return program, program.module(), extra
    except _PickleRefused as exc:
        raise FailatlasError(f"{what} {path} holds pickled Python objects or compiled code ({exc}), which failatlas "
                             f"never loads (either can run any code); {fix}") from None
    except Exception as exc:  # zip, pickle, JSON and schema errors alike: the file is not readable
        raise FailatlasError(f"{what} {path} is not a readable torch.export program ({_first_line(exc)}); "
                             f"{fix}") from None


def read_program(path: Path) -> tuple["torch.export.ExportedProgram", dict[str, str]]:
    """The exported program of a ``.pt2`` file and its extra files, after :func:`_check_no_pickles` (which
    raises ``_PickleRefused``); other failures raise what torch raises. Unlike ``torch.export.load`` this
    never falls back to the older archive format, whose loader unpickles with ``weights_only=False``."""
    from torch.export.pt2_archive._package import load_pt2

    _check_no_pickles(path)
    contents = load_pt2(str(path))
    if "model" not in contents.exported_programs:
        raise ValueError("the archive holds no exported program named 'model'")
    extra = {str(k): (v.decode("utf-8") if isinstance(v, bytes) else str(v)) for k, v in contents.extra_files.items()}
    return contents.exported_programs["model"], extra


def _frozen_copy(module: nn.Module) -> nn.Module:
    module = copy.deepcopy(module).to(device="cpu", dtype=torch.float32).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


_first_line = error_line


def _check_suffix(path: str | Path, suffix: str, what: str) -> Path:
    path = Path(path)
    if path.suffix != suffix:
        raise FailatlasError(f"{what} writes a {suffix} file (load_fused tells the formats apart by the suffix), "
                             f"got {path}; name it {path.with_suffix(suffix).name}")
    return path


def _export_model(G: nn.Module, classifier: nn.Module, noise_mode: str) -> FusedModel:
    if noise_mode not in EXPORT_NOISE_MODES:
        raise FailatlasError(f"an exported fused graph must be deterministic: noise_mode must be one of "
                             f"{EXPORT_NOISE_MODES}, got {noise_mode!r}")
    return FusedModel(G, classifier, noise_mode)


def _example_styles(model: FusedModel, n: int) -> torch.Tensor:
    """Deterministic, non-degenerate styles Tensor[n, dim S] (around the affine layers' bias of 1)."""
    gen = torch.Generator().manual_seed(0)
    return 1.0 + 0.5 * torch.randn(n, model.style_dim, generator=gen)


def _verify(model: FusedModel, graph: Callable[[torch.Tensor], torch.Tensor], what: str) -> None:
    """Check ``graph`` against the eager ``model`` at batch sizes other than the example's, so that a
    graph with a baked-in batch size is never written."""
    for n in _CHECK_BATCHES:
        s = _example_styles(model, n + _EXAMPLE_BATCH)[-n:]
        with torch.no_grad():
            want = model(s)
            try:
                got = graph(s)
            except Exception as exc:
                raise FailatlasError(f"the {what} fails at batch size {n} ({_first_line(exc)}); "
                                     "it does not take a dynamic batch") from None
        tol = _CHECK_RTOL * max(1.0, float(want.abs().max()))
        if got.shape != want.shape or not float((got - want).abs().max()) <= tol:
            raise FailatlasError(f"the {what} disagrees with the eager model at batch size {n}; "
                                 "it cannot be used (please report this)")
