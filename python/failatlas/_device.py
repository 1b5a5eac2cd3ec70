"""The one place a user's ``--device`` string becomes a :class:`torch.device`."""

from __future__ import annotations

import torch

from .errors import FailatlasError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) → CUDA when available, else CPU; a device CUDA cannot provide is refused clearly."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FailatlasError(f"--device {device!r} is not a device ({exc}); use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FailatlasError(f"--device {device} asked for CUDA, but this torch sees no CUDA device; "
                                 "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FailatlasError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type != "cpu":
        raise FailatlasError(f"--device {device}: only cpu and cuda are supported")
    return dev
