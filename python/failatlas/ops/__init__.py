"""Python faces of the native operators ``torch.ops.failatlas.*`` (kernels in ``csrc/ops/``).

Each op ``<op>`` has a wrapper here (``<op>.py``: shapes and units in its docstring, a ``backend``
switch), a pure-torch ``reference_<op>`` in ``_reference.py`` (the spec), and Python-side registrations
(fake tensor, autograd) that :func:`failatlas._ext.load` installs right after the C++ schemas exist.
Importing this package loads no native code.
"""

from __future__ import annotations

import threading

from ._reference import reference_bisect_update, reference_dim_stats, reference_walk_styles
from .bisect_update import _register as _register_bisect_update
from .bisect_update import bisect_update
from .dim_stats import DimStats, dim_stats
from .dim_stats import _register as _register_dim_stats
from .walk_styles import _register as _register_walk_styles
from .walk_styles import walk_styles

__all__ = [
    "DimStats", "bisect_update", "dim_stats", "reference_bisect_update", "reference_dim_stats",
    "reference_walk_styles", "walk_styles",
]

_REGISTRATIONS = (_register_walk_styles, _register_dim_stats, _register_bisect_update)
_registered = False
_lock = threading.Lock()


def _register_native_ops() -> None:
    """Register the fake and autograd implementations of every op (once; needs ``failatlas._C``)."""
    global _registered
    with _lock:
        if not _registered:
            for register in _REGISTRATIONS:
                register()
            _registered = True
