"""Loads the native core :mod:`failatlas._C`.

Nothing here runs at ``import failatlas``: the native module is loaded on first use, by :func:`load`,
and it is never compiled at run time (``make install`` or ``pip install --no-build-isolation -e .``
builds it). Loading order matters: torch first (``_C`` links libtorch and registers its operators with
torch's dispatcher), then ``_C`` (whose ``TORCH_LIBRARY`` blocks define ``torch.ops.failatlas.*``), then
the Python-side registrations of those operators (fake tensors, autograd) in :mod:`failatlas.ops`.
"""

from __future__ import annotations

import importlib
import threading
from types import ModuleType

from .errors import FailatlasError

_BUILD_HINT = "run `make install` or `pip install --no-build-isolation -e .` in the failatlas checkout"

_lock = threading.Lock()
_module: ModuleType | None = None


def load() -> ModuleType:
    """Import and return :mod:`failatlas._C`, making ``torch.ops.failatlas.*`` available.

    Raises :class:`~failatlas.errors.FailatlasError` when the native module is not built, or was built
    against another torch than the one installed.
    """
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        import torch

        try:
            module = importlib.import_module("failatlas._C")
        except ModuleNotFoundError as exc:
            if exc.name != "failatlas._C":
                raise
            raise FailatlasError(f"the native module failatlas._C is not built: {_BUILD_HINT}") from exc
        except ImportError as exc:
            raise FailatlasError(
                f"the native module failatlas._C is installed but cannot be loaded ({exc}); it was "
                f"probably built against another torch: rebuild it ({_BUILD_HINT})"
            ) from exc
        built_with = getattr(module, "built_with_torch", "")
        if built_with and built_with != torch.__version__:
            raise FailatlasError(
                f"failatlas._C was built against torch {built_with} but torch {torch.__version__} is "
                f"installed: rebuild it ({_BUILD_HINT})"
            )
        from .ops import _register_native_ops

        _register_native_ops()
        _module = module
        return module


def available() -> bool:
    """True when :func:`load` succeeds."""
    try:
        load()
    except FailatlasError:
        return False
    return True


def cuda_built() -> bool:
    """True when the native module has its CUDA kernels (see ``FAILATLAS_CUDA`` in CMakeLists.txt)."""
    return bool(load().cuda_built())
