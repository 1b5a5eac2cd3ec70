"""One progress-bar helper for every long loop (training, populations, walks).

``progress(...)`` wraps :mod:`tqdm`: it writes to stderr, and by default shows a bar only when stderr is
a terminal, so logs, pipes and tests stay clean. Set ``disable=False`` (or the environment variable
``FAILATLAS_PROGRESS=1``) to force it on, ``disable=True`` (or ``FAILATLAS_PROGRESS=0``) to force it off.

    for batch in progress(batches, desc="population", unit="batch"):
        ...
    with progress(n_images, desc="epoch 1/20", unit="img") as bar:   # a total: call bar.update(k)
        bar.update(64)
        bar.set_postfix(loss=0.12)
"""

from __future__ import annotations

import os
import sys
from typing import Iterable

from tqdm.auto import tqdm


def progress_enabled(disable: bool | None = None) -> bool:
    """Whether a bar would be shown for this ``disable`` value (see the module docstring)."""
    if disable is not None:
        return not disable
    forced = os.environ.get("FAILATLAS_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def progress(iterable_or_total: Iterable | int, desc: str = "", unit: str = "it",
             disable: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar on stderr over an iterable, or over an integer total (advance it with ``.update(n)``).

    ``disable=None`` shows the bar only on a terminal; extra keyword arguments go to :class:`tqdm`.
    """
    options = dict(desc=desc, unit=unit, file=sys.stderr, disable=not progress_enabled(disable),
                   dynamic_ncols=True, leave=kwargs.pop("leave", True))
    options.update(kwargs)
    if isinstance(iterable_or_total, int):
        return tqdm(total=iterable_or_total, **options)
    return tqdm(iterable_or_total, **options)
