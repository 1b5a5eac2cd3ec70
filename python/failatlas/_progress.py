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

import contextlib
import os
import sys
import time
from typing import Iterable, Sequence

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


class Stages:
    """Announces the stages of a command on stderr and records their times, whether or not stderr is a
    terminal (logs of long jobs need them most):

        failatlas rank: [2/4] ranking (probability) …
        failatlas rank: [2/4] ranking done in 26.6 s (elapsed 36.3 s)

        stage = Stages("rank", ("population", "ranking", "separation", "files"))
        with stage("ranking", "probability"):
            ...
        stage.timings   # {"ranking": 26.6}

    ``verbose=False`` keeps it silent (the timings are still recorded)."""

    def __init__(self, command: str, names: Sequence[str], verbose: bool = True, start: float | None = None) -> None:
        """``start``: the command's start (``time.perf_counter()``) when it began before this object, for
        the elapsed times."""
        self.command, self.names, self.verbose = command, tuple(names), verbose
        self.timings: dict[str, float] = {}
        self.t0 = time.perf_counter() if start is None else start

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"failatlas {self.command}: {text}", file=sys.stderr, flush=True)

    def _index(self, name: str) -> str:
        return f"[{self.names.index(name) + 1}/{len(self.names)}]"

    @contextlib.contextmanager
    def __call__(self, name: str, detail: str = ""):
        shown = f"{self._index(name)} {name}"
        self._say(f"{shown}{' (' + detail + ')' if detail else ''} …")
        t = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t
        self._say(f"{shown} done in {self.timings[name]:.1f} s (elapsed {time.perf_counter() - self.t0:.1f} s)")

    def skip(self, name: str, why: str) -> None:
        self._say(f"{self._index(name)} {name} skipped ({why})")
