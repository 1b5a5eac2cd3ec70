"""The one place that touches ``torch.jit``.

TorchScript is deprecated from torch 2.9 on and every ``torch.jit`` call warns; failatlas still uses it
(it is the format a C++ program can run without Python), so these wrappers silence exactly those
deprecation warnings, and no other module imports ``torch.jit`` directly.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator

import torch

from .errors import FailatlasError


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Suppress torch.jit's deprecation warnings (only those) inside the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*TorchScript.*")
        yield


def load_torchscript(path: str | Path, what: str = "TorchScript file",
                     extra_files: dict[str, str] | None = None) -> torch.jit.ScriptModule:
    """Load a TorchScript archive on the CPU in eval mode; a missing or corrupt file raises
    :class:`FailatlasError`. (TorchScript archives hold TorchScript code, not pickled Python objects.)
    ``extra_files``: name → "" for each extra file to read; filled in place (bytes, empty when absent)."""
    path = Path(path)
    if not path.is_file():
        raise FailatlasError(f"{what} not found: {path}")
    try:
        with quiet_jit():
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {})
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # torch's zip reader appends a paragraph of speculation to every failure: keep the failure itself
        first = first.split(" This is an internal miniz error")[0]
        raise FailatlasError(f"{what} {path} is not a readable TorchScript archive ({first}); save it again with "
                             "torch.jit.save (an ONNX file must be named .onnx, a torch.export program .pt2)") from None
    return module.eval()


def trace(module: torch.nn.Module, example: torch.Tensor | tuple, **kwargs) -> torch.jit.ScriptModule:
    with quiet_jit():
        return torch.jit.trace(module, example, **kwargs)


def save(module: torch.jit.ScriptModule, path: str | Path, extra_files: dict[str, str] | None = None) -> None:
    """``torch.jit.save`` atomically; ``extra_files``: name → text stored in the archive beside the code.

    Saved to memory first: given a file, torch.jit.save names the archive's top folder after it, and the
    temporary file's random name made every export of one model a different file (another sha256)."""
    import io

    from ._io import write_bytes

    buffer = io.BytesIO()
    with quiet_jit():
        torch.jit.save(module, buffer, _extra_files=extra_files or {})
    write_bytes(path, buffer.getvalue())
