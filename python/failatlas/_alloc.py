"""Keep freed memory in the process (glibc), so large tensors stop paying for fresh pages.

By default glibc's malloc serves every allocation above a moving threshold (128 KiB at first) with its own
``mmap`` and gives it back with ``munmap`` on free, and trims the heap's top whenever 128 KiB are free.
The analysis allocates and frees tensors of a few MB thousands of times (one batch of activations, then
its gradients), so each batch starts on fresh pages: millions of page faults. Measured on the shipped
models, one thread, 2 cores: ranking 1,024 samples 8.2–8.5 s → 7.3 s, minor page faults 0.6–1.0 M →
0.13 M, the same as preloading tcmalloc (7.3 s); ``failatlas analyze --quick`` 65.1 → 61.2 s, minor page
faults 2.7 M → 0.17 M, peak RSS 711 → 749 MB; ``failatlas analyze`` with defaults 5 min 4 s → 4 min 15 s,
faults 21.8 M → 0.24 M, peak RSS 0.82 → 0.88 GB, the same files (``benchmarks/run.py`` calls it too).
Fixing the mmap threshold at glibc's largest (32 MiB) and raising the trim threshold keeps the freed memory
for the next batch instead.

``failatlas`` (the command) calls :func:`keep_freed_memory` once at start; ``FAILATLAS_MALLOPT=0`` turns it
off. Library users who want the same can call it themselves. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's maximum on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as described above; True when it took effect, False when off or not glibc."""
    if os.environ.get("FAILATLAS_MALLOPT", "").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has it
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))  # refused on 32-bit (its maximum is lower)
    trim_ok = bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return mmap_ok and trim_ok


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not tell."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError  # unreachable


def require_memory(nbytes: int, what: str, fix: str, at_least: bool = False) -> None:
    """Raise :class:`~failatlas.errors.FailatlasError` when ``what`` (e.g. "--n 10000000000 samples") needs
    ``nbytes`` of memory, more than this machine has at all: torch's allocator would fail with a traceback
    from deep inside it (or the process be killed for memory) after the work before it. ``fix`` ends the
    message; ``at_least``: ``nbytes`` is a lower bound, not an estimate. A size that fits physical memory is
    left to the run (free memory changes under it)."""
    from .errors import FailatlasError

    total = physical_memory()
    if total is not None and nbytes > total:
        raise FailatlasError(f"{what} need {'at least' if at_least else 'about'} {_size(nbytes)} of memory, more than this machine has "
                             f"({_size(total)}); {fix}")
