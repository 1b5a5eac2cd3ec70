"""Corner-shift margins: how far typical samples are from failing along each top dimension (beyond the paper).

The paper's corner cases (DESIGN §4.4) start from one point per class, its "average image". To bound the
failure conditions, the spread matters too: is the average image's corner shift typical, or do many samples
of the class fail much sooner? :class:`CornerMargins` runs the same search (:class:`CornerCaseSearch`:
bracket in ``step`` σ, refine to ``tol``, give up beyond ``max_shift``, verify every case) from
``per_class`` well-classified samples of each class of the population, drawn with a seed, along each
top dimension, and reports the quantiles of their shifts:

    q05 = 3.2σ for dimension 1247 means that 95% of the searched samples need a shift of at least 3.2σ
    along it (in its degrading direction) before p_y ≤ 0.5; 5% fail sooner.

Quantiles take the lower of two neighbouring order statistics (never interpolated: the smaller margin, the
cautious side for a bound), and a sample without a corner case within ``max_shift`` counts as beyond it
(+∞), so a median of ``inf`` says that most samples never fail along that dimension within the search.
A well-classified sample can have p_y ≤ 0.5 already (argmax and p_y differ with more than two classes):
its margin is 0, and it is counted as ``at_start``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import _io
from ..errors import FailatlasError
from .corners import CornerCaseSearch
from .population import Population
from .ranking import Ranking

QUANTILES = (0.05, 0.25, 0.5)
DEFAULT_PER_CLASS = 10
JSON_FORMAT, JSON_VERSION = "failatlas-margins", 1
_JSON_HINT = "pass the margins.json of a `failatlas analyze` run, or a file written from MarginResult.to_json()"


def lower_quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile of a 1-D float64 tensor, the lower order statistic (``+inf`` entries sort last);
    NaN when empty."""
    if values.numel() == 0:
        return float("nan")
    ordered = torch.sort(values.to(torch.float64)).values
    return float(ordered[int(math.floor(q * (ordered.numel() - 1)))])


@dataclass(frozen=True, eq=False)
class MarginResult:
    """The corner shifts of the searched samples (see the module docstring).

    dims: the K walked dimensions (ranking order); index: int64 Tensor[N], each start's row in the
    population; labels: int64 Tensor[N], its class; shifts: float64 Tensor[N, K], the corner shift in σ
    units (``inf`` when none was found within ``max_shift``, 0 when p_y ≤ 0.5 at the start); verified:
    bool Tensor[N, K], the re-classified image confirms it (True for ``inf`` rows: nothing to confirm);
    p_start: float64 Tensor[N], p_y at each start (≤ 0.5: ``at_start``, margin 0);
    ranks, layers: each dimension's rank and style layer; per_class: the samples asked for per class;
    skipped_classes: classes with no well-classified sample to start from."""

    dims: tuple[int, ...]
    ranks: tuple[int, ...]
    layers: tuple[str, ...]
    index: torch.Tensor
    labels: torch.Tensor
    shifts: torch.Tensor
    verified: torch.Tensor
    p_start: torch.Tensor
    per_class: int
    seed: int
    step: float
    max_shift: float
    tol: float
    evaluations: int
    skipped_classes: tuple[int, ...] = ()

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.labels.tolist())))

    @property
    def at_start(self) -> torch.Tensor:
        """bool Tensor[N]: the starts whose p_y is ≤ 0.5 already (margin 0 along every dimension)."""
        return self.p_start <= 0.5

    def quantile(self, q: float, dim: int, cls: int | None = None) -> float:
        """The q quantile of dimension ``dim``'s shifts over the starts (of class ``cls`` only, if given)."""
        if dim not in self.dims:
            raise FailatlasError(f"dimension {dim} was not searched; searched: {list(self.dims)}")
        col = self.shifts[:, self.dims.index(dim)]
        return lower_quantile(col if cls is None else col[self.labels == cls], q)

    def summary(self) -> dict[str, Any]:
        """Per dimension: its quantiles over all starts, how many starts found no corner case, how many failed
        verification, and the class whose median is smallest (the class that fails soonest along it; None when
        no class's median is finite, the lowest of tied classes otherwise). ``at_start``: starts with
        p_y ≤ 0.5 already, margin 0 along every dimension (a low quantile of 0 may be only these)."""
        rows = []
        for j, d in enumerate(self.dims):
            col = self.shifts[:, j]
            medians = {c: lower_quantile(col[self.labels == c], 0.5) for c in self.classes}
            soonest = min(medians, key=lambda c: (medians[c], c)) if medians else None
            if soonest is not None and not math.isfinite(medians[soonest]):
                soonest = None
            rows.append({"dim": d, "rank": self.ranks[j], "layer": self.layers[j],
                         **{_qkey(q): lower_quantile(col, q) for q in QUANTILES},
                         "not_found": int(torch.isinf(col).sum()), "unverified": int((~self.verified[:, j]).sum()),
                         "soonest_class": soonest,
                         "soonest_class_median": None if soonest is None else medians[soonest]})
        return {"starts": int(self.index.numel()), "at_start": int(self.at_start.sum()), "per_class": self.per_class,
                "classes": list(self.classes),
                "skipped_classes": list(self.skipped_classes), "max_shift": self.max_shift, "seed": self.seed,
                "evaluations": self.evaluations, "dims": rows}

    def to_json(self) -> dict[str, Any]:
        """Everything, JSON-ready (``inf`` as null: a shift not found; :meth:`read_json` reads it back)."""
        return _io.jsonable({"format": JSON_FORMAT, "version": JSON_VERSION, "summary": self.summary(),
                             "dims": list(self.dims), "ranks": list(self.ranks), "layers": list(self.layers),
                             "index": self.index.tolist(), "labels": self.labels.tolist(),
                             "shifts": self.shifts.tolist(), "verified": self.verified.tolist(),
                             "p_start": self.p_start.tolist(), "per_class": self.per_class, "seed": self.seed,
                             "step": self.step,
                             "max_shift": self.max_shift, "tol": self.tol, "evaluations": self.evaluations,
                             "skipped_classes": list(self.skipped_classes)})

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "margins") -> "MarginResult":
        """Rebuild a result from :meth:`to_json` output (also the ``margins.json`` beside the figure)."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "corner-shift margins", JSON_VERSION, _JSON_HINT)
        with _io.rebuilding(source, "margins result", "run failatlas analyze again"):
            dims = tuple(int(d) for d in obj["dims"])
            ranks, layers = tuple(int(r) for r in obj["ranks"]), tuple(str(x) for x in obj["layers"])
            index = torch.tensor([int(i) for i in obj["index"]], dtype=torch.int64)
            labels = torch.tensor([int(c) for c in obj["labels"]], dtype=torch.int64)
            p_start = torch.tensor([float(p) for p in obj["p_start"]], dtype=torch.float64)
            n, k = index.numel(), len(dims)
            if not len(ranks) == len(layers) == k:
                raise ValueError(f"{k} dims but {len(ranks)} ranks and {len(layers)} layers")
            if not labels.numel() == p_start.numel() == n or (n and int(index.min()) < 0):
                raise ValueError(f"{n} start indices (non-negative) need as many labels and p_start values")
            for key in ("shifts", "verified"):
                if len(obj[key]) != n or any(len(row) != k for row in obj[key]):
                    raise ValueError(f"{key} must be {n} rows of {k} (one per start, one per dimension)")
            shifts = torch.tensor([[math.inf if v is None else float(v) for v in row] for row in obj["shifts"]],
                                  dtype=torch.float64).reshape(n, k)
            verified = torch.tensor(obj["verified"], dtype=torch.bool).reshape(n, k)
            return cls(dims=dims, ranks=ranks, layers=layers, index=index, labels=labels, shifts=shifts,
                       verified=verified, p_start=p_start, per_class=int(obj["per_class"]), seed=int(obj["seed"]),
                       step=float(obj["step"]), max_shift=float(obj["max_shift"]), tol=float(obj["tol"]),
                       evaluations=int(obj["evaluations"]),
                       skipped_classes=tuple(int(c) for c in obj["skipped_classes"]))

    @classmethod
    def read_json(cls, path: str | Path) -> "MarginResult":
        """A result written by :meth:`to_json`, or the ``margins.json`` of ``failatlas analyze``."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "margins file", "corner-shift margins", JSON_VERSION,
                                   _JSON_HINT)
        return cls.from_json(obj, f"margins file {path}")

    def to_csv(self, path: str | Path) -> Path:
        """One row per (start, dimension): population index, class, dimension, rank, layer, shift (empty
        when not found within max_shift), found, at_start (p_y ≤ 0.5 at the start: shift 0), verified (empty
        when not found: nothing to verify)."""
        lines = ["index,class,dim,rank,layer,shift,found,at_start,verified"]
        flag = lambda b: str(bool(b)).lower()  # noqa: E731
        for i in range(self.index.numel()):
            for j, d in enumerate(self.dims):
                t = float(self.shifts[i, j])
                found = not math.isinf(t)
                lines.append(f"{int(self.index[i])},{int(self.labels[i])},{d},{self.ranks[j]},{self.layers[j]},"
                             f"{repr(t) if found else ''},{flag(found)},{flag(self.at_start[i])},"
                             f"{flag(self.verified[i, j]) if found else ''}")
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode())
        return Path(path)

    def format(self) -> str:
        """A table: one line per dimension."""
        s = self.summary()
        at = f"; {s['at_start']} of them at p_y ≤ 0.5 already (margin 0)" if s["at_start"] else ""
        out = [f"margins: corner shifts of {self.index.numel()} well-classified samples ({self.per_class} per "
               f"class at most), in σ; 'inf': no corner case within {self.max_shift:g}σ{at}",
               f"{'rank':>4} {'dim':>5} {'layer':<10} {'q05':>7} {'q25':>7} {'median':>7} {'none':>5} "
               f"{'unverified':>10}"]
        for r in s["dims"]:
            out.append(f"{r['rank']:>4} {r['dim']:>5} {r['layer']:<10} " + " ".join(
                f"{r[_qkey(q)]:>7.2f}" for q in QUANTILES) + f" {r['not_found']:>5} {r['unverified']:>10}")
        return "\n".join(out)


def _qkey(q: float) -> str:
    return "median" if q == 0.5 else f"q{round(100 * q):02d}"


def pick_starts(population: Population, per_class: int, seed: int = 0,
                classes: Sequence[int] | None = None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Up to ``per_class`` well-classified samples of each class (a seeded draw without replacement, in
    population order within a class): their population indices, and the classes with none."""
    gen = torch.Generator().manual_seed(int(seed))
    chosen, skipped = [], []
    for c in (classes if classes is not None else sorted(set(population.y.tolist()))):
        idx = torch.nonzero((population.y == c) & population.well).flatten()
        if idx.numel() == 0:
            skipped.append(int(c))
            continue
        pick = idx[torch.randperm(idx.numel(), generator=gen)[:per_class]]
        chosen.append(torch.sort(pick).values)
    index = torch.cat(chosen) if chosen else torch.zeros(0, dtype=torch.int64)
    return index, tuple(skipped)


class CornerMargins:
    """The corner shifts of many well-classified samples along the top dimensions (module docstring).

    >>> margins = CornerMargins(G, classifier, ranking).compute(population, per_class=10)
    >>> margins.summary()["dims"][0]      # {"dim", "rank", "q05", "q25", "median", "not_found", ...}
    """

    def __init__(self, generator: nn.Module, classifier: nn.Module, ranking: Ranking,
                 batch_size: int | None = None, progress_bar: bool | None = None) -> None:
        self.search = CornerCaseSearch(generator, classifier, ranking, batch_size=batch_size,
                                       progress_bar=progress_bar)
        self.ranking = ranking

    def compute(self, population: Population, per_class: int = DEFAULT_PER_CLASS, dims: Sequence[int] | int = 10,
                seed: int = 0, step: float = 5.0, max_shift: float = 100.0, tol: float = 0.01) -> MarginResult:
        if not isinstance(population, Population):
            raise FailatlasError(f"CornerMargins.compute takes a Population, got {type(population).__name__}")
        if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
            raise FailatlasError(f"per_class must be a positive number of samples per class, got {per_class!r}")
        classes = None if population.classes is None else sorted(population.classes)
        index, skipped = pick_starts(population, int(per_class), seed, classes)
        if index.numel() == 0:
            raise FailatlasError("no class has a well-classified sample in the population, so there is no start "
                                 "for the margins; use a larger population")
        cases = self.search.search(starts=population.s[index], labels=population.y[index], dims=dims, pairs=False,
                                   step=step, max_shift=max_shift, tol=tol)
        K = len(cases.dims)
        shifts = torch.full((index.numel(), K), math.inf, dtype=torch.float64)
        verified = torch.ones(index.numel(), K, dtype=torch.bool)
        col = {d: j for j, d in enumerate(cases.dims)}
        for r in cases.cases:
            if r.found:
                shifts[r.start, col[r.dims[0]]] = r.shift
                verified[r.start, col[r.dims[0]]] = r.verified
        rank_of = self.ranking.rank_of()
        layout = self.ranking.layout
        return MarginResult(dims=tuple(cases.dims), ranks=tuple(int(rank_of[d]) for d in cases.dims),
                            layers=tuple(layout[d].name for d in cases.dims), index=index,
                            labels=population.y[index].clone(), shifts=shifts, verified=verified,
                            p_start=cases.p_start.to(torch.float64).clone(),
                            per_class=int(per_class), seed=int(seed), step=float(step), max_shift=float(max_shift),
                            tol=float(tol), evaluations=cases.evaluations + cases.verify_evaluations,
                            skipped_classes=skipped)
