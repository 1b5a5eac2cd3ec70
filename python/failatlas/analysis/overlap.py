"""Global vs class-specific directions: how much the classes' top dimensions overlap.

From a ranking computed with ``per_class=True`` (``failatlas rank --per-class``):

* the top-k dimensions of each class's ranking (k = 10 by default) and of the global ranking;
* the Jaccard index |A ∩ B| / |A ∪ B| of every pair of classes (a C×C matrix, 1 on the diagonal) and of each
  class with the global top-k;
* the *shared* dimensions: those in the top-k of at least half of the classes (count ≥ ⌈C/2⌉, C = classes
  with a per-class ranking), sorted by count (descending), then by global rank, then by index.

A dimension shared by most classes is a global failure direction; a class whose top-k barely meets the
others' has class-specific ones.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import _io
from ..errors import FailatlasError
from .ranking import Ranking

DEFAULT_K = 10
JSON_FORMAT = "failatlas-class-overlap"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)
_JSON_HINT = "pass the overlap.json of a `failatlas analyze` run, or a file written from ClassOverlap.to_json()"


def jaccard(a, b) -> float:
    """|a ∩ b| / |a ∪ b| of two collections of dimensions (1.0 for two empty ones)."""
    a, b = set(int(x) for x in a), set(int(x) for x in b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


@dataclass(frozen=True)
class SharedDim:
    """A dimension in the top-k of ``count`` classes (listed in ``classes``)."""

    dim: int
    count: int
    classes: tuple[int, ...]
    global_rank: int  # 1-based rank in the global ranking
    in_global_top: bool
    layer: str | None = None
    channel: int | None = None


@dataclass(frozen=True, eq=False)
class ClassOverlap:
    """Overlap of the per-class top-k sets.

    classes: the classes with a per-class ranking (ascending); top: class → its top-k dimensions (best
    first); global_top: the global ranking's top-k; jaccard: float64 Tensor[C, C] in the order of
    ``classes``; jaccard_global: float64 Tensor[C], each class vs the global top-k; shared: the dimensions in
    the top-k of ≥ ``threshold`` classes.
    """

    k: int
    classes: tuple[int, ...]
    top: dict[int, tuple[int, ...]]
    global_top: tuple[int, ...]
    jaccard: torch.Tensor
    jaccard_global: torch.Tensor
    shared: tuple[SharedDim, ...]
    threshold: int

    @property
    def mean_pairwise(self) -> float:
        """Mean Jaccard over distinct class pairs (NaN with fewer than two classes)."""
        c = len(self.classes)
        if c < 2:
            return float("nan")
        off = ~torch.eye(c, dtype=torch.bool)
        return float(self.jaccard[off].mean())

    def to_json(self) -> dict[str, Any]:
        mp = self.mean_pairwise
        return {
            "format": JSON_FORMAT, "k": self.k, "classes": list(self.classes), "threshold": self.threshold,
            "top": {str(c): list(d) for c, d in self.top.items()}, "global_top": list(self.global_top),
            "jaccard": self.jaccard.tolist(), "jaccard_global": self.jaccard_global.tolist(),
            "mean_pairwise_jaccard": None if math.isnan(mp) else mp,
            "shared": [{"dim": d.dim, "count": d.count, "classes": list(d.classes), "global_rank": d.global_rank,
                        "in_global_top": d.in_global_top, "layer": d.layer, "channel": d.channel}
                       for d in self.shared],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "class overlap") -> "ClassOverlap":
        """Rebuild a result from :meth:`to_json` output (also the ``overlap.json`` beside the overlap figure)."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a class overlap", JSON_VERSION, _JSON_HINT)
        with _io.rebuilding(source, "class overlap", "compare the rankings again"):
            classes = tuple(int(c) for c in obj["classes"])
            C = len(classes)

            def ints(v: Any) -> tuple[int, ...]:
                return tuple(int(x) for x in v)

            return cls(
                k=int(obj["k"]), classes=classes, top={int(c): ints(d) for c, d in obj["top"].items()},
                global_top=ints(obj["global_top"]),
                jaccard=torch.tensor(obj["jaccard"], dtype=torch.float64).reshape(C, C),
                jaccard_global=torch.tensor(obj["jaccard_global"], dtype=torch.float64).reshape(C),
                shared=tuple(SharedDim(dim=int(d["dim"]), count=int(d["count"]), classes=ints(d["classes"]),
                                       global_rank=int(d["global_rank"]), in_global_top=bool(d["in_global_top"]),
                                       layer=None if d["layer"] is None else str(d["layer"]),
                                       channel=None if d["channel"] is None else int(d["channel"]))
                             for d in obj["shared"]),
                threshold=int(obj["threshold"]))

    @classmethod
    def read_json(cls, path: str | Path) -> "ClassOverlap":
        """A result written by :meth:`to_json`, or the ``overlap.json`` of ``failatlas analyze``."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "class-overlap file", "a class overlap", JSON_VERSION,
                                   _JSON_HINT)
        return cls.from_json(obj, f"class-overlap file {path}")

    def to_csv(self, path: str | Path) -> Path:
        """The Jaccard matrix: one row per class, columns ``class``, one per class, ``global`` (floats as
        ``repr``), atomically."""
        lines = [",".join(["class", *(str(c) for c in self.classes), "global"])]
        for i, c in enumerate(self.classes):
            lines.append(",".join([str(c), *(repr(float(v)) for v in self.jaccard[i].tolist()),
                                   repr(float(self.jaccard_global[i]))]))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path


class ClassDirections:
    """Compare the top-k dimensions of the per-class rankings with each other and with the global ones.

    >>> result = ClassDirections(k=10).compare(ranking)   # ranking from rank(population, per_class=True)
    """

    def __init__(self, k: int = DEFAULT_K) -> None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:  # numpy integers too
            raise FailatlasError(f"k must be a positive number of dimensions, got {k!r}")
        self.k = int(k)

    def compare(self, ranking: Ranking) -> ClassOverlap:
        if not isinstance(ranking, Ranking):
            raise FailatlasError(f"compare() takes a Ranking, got {type(ranking).__name__}")
        if not ranking.per_class:
            raise FailatlasError("the ranking has no per-class rankings; rank with --per-class "
                                 "(GradientRanking.rank(population, per_class=True))")
        if self.k > ranking.style_dim:
            raise FailatlasError(f"k = {self.k} exceeds the ranking's {ranking.style_dim} dimensions")
        k = self.k
        classes = tuple(sorted(ranking.per_class))
        top = {c: tuple(ranking.per_class[c].order[:k].tolist()) for c in classes}
        global_top = tuple(ranking.order[:k].tolist())
        C = len(classes)
        jac = torch.tensor([[jaccard(top[a], top[b]) for b in classes] for a in classes], dtype=torch.float64)
        jac_g = torch.tensor([jaccard(top[c], global_top) for c in classes], dtype=torch.float64)
        threshold = math.ceil(C / 2)
        members: dict[int, list[int]] = {}
        for c in classes:
            for d in top[c]:
                members.setdefault(d, []).append(c)
        rank_of = ranking.rank_of()
        in_global = set(global_top)
        shared = []
        for d, cs in members.items():
            if len(cs) >= threshold:
                info = ranking.layout[d] if d < len(ranking.layout) else None
                shared.append(SharedDim(dim=d, count=len(cs), classes=tuple(cs), global_rank=int(rank_of[d]),
                                        in_global_top=d in in_global, layer=info.name if info else None,
                                        channel=int(info.channel) if info else None))
        shared.sort(key=lambda s: (-s.count, s.global_rank, s.dim))
        return ClassOverlap(k=k, classes=classes, top=top, global_top=global_top, jaccard=jac, jaccard_global=jac_g,
                            shared=tuple(shared), threshold=threshold)


def class_overlap(ranking: Ranking, k: int = DEFAULT_K) -> ClassOverlap:
    """Functional form of :meth:`ClassDirections.compare`."""
    return ClassDirections(k=k).compare(ranking)
