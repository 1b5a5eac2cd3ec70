"""The native engine: the chunked evaluation loop over a fused TorchScript graph, in C++ (issue 5 item 3).

:class:`NativeEngine` wraps ``failatlas._C.Engine`` (csrc/engine/engine.h, the same class the
``failatlas-eval`` runner uses): it loads a graph written by :func:`~failatlas.engine.fused.export_torchscript`
once and evaluates it in chunks of ``batch_size`` styles through buffers it allocates once and reuses.

* ``probs(s, labels)`` → p_y float64 Tensor[N] (the float64 softmax of the logits at the label);
* ``walk(starts, labels, dims, shifts, sigma, sign)`` → :class:`~failatlas.engine.walks.WalkResult`, the
  same walk as :class:`~failatlas.engine.walks.WalkEngine` (full recomputation of every point: the graph is
  one opaque module, so there is no prefix cache);
* ``grad(s, labels)`` → per-sample ∂p_y/∂s float32 Tensor[N, D], as
  :func:`failatlas.analysis.ranking.style_gradients` (target ``"probability"``).

Inputs are checked here, with :class:`~failatlas.errors.FailatlasError` messages, before the C++ code sees
them (which checks again and raises rather than crash). The GIL is released while the engine runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import _ext
from ..errors import FailatlasError
from .fused import PROGRAM_SUFFIX, TORCHSCRIPT_SUFFIX
from .walks import WalkResult, check_label_range, check_scales

__all__ = ["NativeEngine", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 256
MAX_THREADS = 4096  # as failatlas-eval's --threads


class NativeEngine:
    """``NativeEngine(path, batch_size=256, threads=None)``: a fused TorchScript graph run by the C++ engine.

    batch_size: styles per forward pass (memory stays bounded by it whatever N); threads: torch's intra-op
    threads during each call (restored after; None leaves torch's setting). Attributes: ``path``,
    ``style_dim``, ``num_classes``, ``batch_size``, ``threads``."""

    def __init__(self, path: str | Path, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None) -> None:
        path = Path(path)
        if path.suffix == PROGRAM_SUFFIX:
            raise FailatlasError(f"the native engine runs TorchScript graphs ({TORCHSCRIPT_SUFFIX}), got the "
                                 f"torch.export program {path}; write one with export_torchscript")
        if not path.is_file():
            raise FailatlasError(f"fused graph not found: {path}; write one with export_torchscript")
        if not _is_int(batch_size) or batch_size < 1:
            raise FailatlasError(f"batch_size must be a positive integer, got {batch_size!r}")
        if threads is not None and (not _is_int(threads) or not 1 <= threads <= MAX_THREADS):
            raise FailatlasError(f"threads must be an integer in [1, {MAX_THREADS}] or None (torch's setting), got "
                                 f"{threads!r}")
        native = _ext.load()
        self._error = native.EngineError
        try:
            self._engine = native.Engine(str(path), batch=int(batch_size), threads=int(threads or 0))
        except self._error as exc:
            raise FailatlasError(str(exc)) from None
        self.path = path
        self.style_dim = int(self._engine.style_dim)
        self.num_classes = int(self._engine.num_classes)
        self.batch_size = int(batch_size)
        self.threads = threads

    def __repr__(self) -> str:
        return (f"NativeEngine({str(self.path)!r}, style_dim={self.style_dim}, num_classes={self.num_classes}, "
                f"batch_size={self.batch_size}, threads={self.threads})")

    # --- evaluation ------------------------------------------------------------------------------------

    def probs(self, s, labels, *, return_pred: bool = False):
        """p_y float64 Tensor[N] of styles s [N, style_dim] and labels int [N]; with return_pred, also the
        predicted classes int64 Tensor[N]."""
        s = self._styles(s, "styles")
        labels = self._labels(labels, s.shape[0])
        p, pred = self._call(self._engine.probs, s, labels)
        return (p, pred) if return_pred else p

    def walk(self, starts, labels, dims, shifts, sigma=None, sign=None) -> WalkResult:
        """Every start moved along every dimension by every shift, as :meth:`WalkEngine.walk`.

        starts: [N, style_dim]; labels: int [N]; dims: int [K]; shifts: [M] (σ units); sigma: [style_dim]
        (s units per σ; None: 1); sign: [K] (the direction of each dimension; None: +1). The point is
        starts[n] with dims[k] moved by float32(shifts[m] · sign[k] · sigma[dims[k]]) computed in float64."""
        starts = self._styles(starts, "starts")
        labels = self._labels(labels, starts.shape[0])
        D = self.style_dim
        dims = _integers(dims, "dims").reshape(-1)
        if dims.numel() and (int(dims.min()) < 0 or int(dims.max()) >= D):
            raise FailatlasError(f"dims must be style dimensions in [0, {D}), got {int(dims.min())}..{int(dims.max())}")
        shifts = _floats(shifts, "shifts").reshape(-1)
        sigma = torch.ones(D, dtype=torch.float64) if sigma is None else _floats(sigma, "sigma").reshape(-1)
        sign = torch.ones(dims.numel(), dtype=torch.float64) if sign is None else _floats(sign, "sign").reshape(-1)
        check_scales(D, dims, sigma, sign)
        scale = (sign * sigma[dims]).contiguous()
        p, pred = self._call(self._engine.walk, starts, labels, dims.contiguous(), shifts.contiguous(), scale)
        return WalkResult(p, pred, int(p.numel()))

    def grad(self, s, labels) -> torch.Tensor:
        """Per-sample gradients ∂p_y/∂s: float32 Tensor[N, style_dim] (autograd through the graph)."""
        s = self._styles(s, "styles")
        labels = self._labels(labels, s.shape[0])
        return self._call(self._engine.grad, s, labels)

    # --- checks ----------------------------------------------------------------------------------------

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self._error as exc:
            raise FailatlasError(str(exc)) from None

    def _styles(self, s, what: str) -> torch.Tensor:
        D = self.style_dim
        if isinstance(s, np.ndarray):
            s = torch.from_numpy(s)
        if not isinstance(s, torch.Tensor):
            raise FailatlasError(f"{what} must be a Tensor [N, {D}] of style vectors, got {type(s).__name__}")
        if s.device.type == "meta":
            raise FailatlasError(f"{what} are on the 'meta' device (shapes without values); pass real tensors")
        if not s.dtype.is_floating_point:
            raise FailatlasError(f"{what} must be floating point, got {s.dtype}")
        if s.ndim != 2 or s.shape[1] != D:
            raise FailatlasError(f"{what} must have shape [N, {D}] (the style width of {self.path.name}), got "
                                 f"{list(s.shape)}; use styles of the generator the graph was exported from")
        s = s.detach().to(device="cpu")
        if not bool(torch.isfinite(s).all()):
            raise FailatlasError(f"{what} contain NaN or infinite values")
        s = s.to(torch.float32).contiguous()
        if not bool(torch.isfinite(s).all()):
            raise FailatlasError(f"{what} hold values beyond float32's range (±3.4e38), which the graph runs in")
        return s

    def _labels(self, labels, n: int) -> torch.Tensor:
        labels = _integers(labels, "labels")
        if labels.shape != (n,):
            raise FailatlasError(f"labels must have shape [{n}] (one class per style), got {list(labels.shape)}")
        check_label_range(labels, self.num_classes)
        return labels.contiguous()


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _as_tensor(v, what: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError, RuntimeError):
        raise FailatlasError(f"{what} must be a tensor, an array or a list of numbers, got {type(v).__name__}") from None


def _integers(v, what: str) -> torch.Tensor:
    t = _as_tensor(v, what)
    if t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool):
        raise FailatlasError(f"{what} must be integers, got {t.dtype}")  # (an empty list is float64)
    return t.to(torch.int64)


def _floats(v, what: str) -> torch.Tensor:
    t = _as_tensor(v, what)
    if t.dtype.is_complex or t.dtype == torch.bool:
        raise FailatlasError(f"{what} must be real numbers, got {t.dtype}")
    t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise FailatlasError(f"{what} contains NaN or infinite values")
    return t
