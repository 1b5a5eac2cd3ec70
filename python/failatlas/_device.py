"""The one place a user's ``--device`` string becomes a :class:`torch.device`."""

from __future__ import annotations

import torch

from .errors import FailatlasError


def resolve_device(device: str | torch.device | None, allow: tuple[str, ...] = ("cpu", "cuda")) -> torch.device:
    """'auto' (or None) → CUDA when available, else CPU; a device this machine cannot provide, or of a type
    not in ``allow`` (the classifier commands also take "mps"), is refused clearly."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FailatlasError(f"--device {device!r} is not a device ({exc}); use cpu, cuda, cuda:N or auto") from None
    if dev.type not in allow:
        names = ", ".join(allow[:-1]) + " and " + allow[-1] if len(allow) > 1 else allow[0]
        raise FailatlasError(f"--device {device}: only {names} are supported here")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FailatlasError(f"--device {device} asked for CUDA, but this torch sees no CUDA device; "
                                 "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FailatlasError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise FailatlasError(f"--device {device}: this torch sees no MPS device; use --device cpu")
    return dev
