"""Corner cases: the smallest shift along a degrading StyleSpace direction at which p_y ≤ 0.5 (DESIGN §4.4).

From a start s₀ (by default the "average digit" of a class: the mean s of its well-classified samples),
each searched dimension k is moved in its degrading direction ``ranking.direction[k]``::

    s(t) = s₀ + t · σ_k · direction_k · e_k          (t ≥ 0, in σ units)

and we look for the smallest t with p_y(s(t)) ≤ 0.5. Pairs of top dimensions are also moved together
(both by the same t σ, each in its own degrading direction).

The search works on a grid of ``tol``-wide steps anchored at the bracket points, exactly the points the
authors' procedure visits: bracket in steps of ``step`` σ (5, 10, … up to ``max_shift``; beyond it the case
is "not found"); then, inside the bracket (lo, hi] with p(lo) > 0.5 ≥ p(hi), the candidates are
hi − m·tol, m = 0 … ⌈(hi − lo)/tol⌉ (the last one is lo itself), and a binary search over m finds two
neighbours with p ≤ 0.5 at t and p > 0.5 at t − tol. Both probabilities are evaluated, so both conditions
hold by construction, monotone classifier or not. The authors step back from hi by tol until p > 0.5
(:func:`authors_corner_search`, up to 500 evaluations per bracket); the binary search needs ⌈log₂ 500⌉ = 9.
The default refinement is a safeguarded secant search over the same grid (``refine="secant"``): each
step goes where logit p_y, interpolated linearly between the bracket's ends, crosses 0, and falls back to
the midpoint after two steps that moved the same end (Illinois); it keeps the same bracket invariant, so
it ends on the same neighbours as the binary search whenever p_y crosses 0.5 once in the bracket, in
fewer evaluations (``benchmarks/run.py --only corners`` compares the two on the shipped models; dated
figures in ``benchmarks/RESULTS.md``).

Batched: every round evaluates one batch holding the next point of every pending (start, dimensions) row,
whatever its phase (bracket or bisection). Walk points are built by :func:`failatlas.ops.walk_styles` in
float64 and cast to the generator's dtype; the classifier sees ``classifier_view(G.synthesis_from_styles(s))``.
Every corner case found is verified: its styles are rebuilt, its images synthesized afresh (in batches
separate from the search) and classified again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import _ext, _io
from .._progress import progress
from ..errors import FailatlasError
from ..models.adapter import classifier_view
from ..ops import walk_styles
from .population import (Population, _eval_mode, _model_dtype_device, check_batch_size, check_class_counts,
                         check_logits)
from .ranking import Ranking

JSON_FORMAT = "failatlas-corner-cases"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)
_JSON_HINT = "pass the corner_cases.json of a `failatlas analyze` run, or a file written from CornerCases.to_json()"
CSV_COLUMNS = ("kind", "start", "cls", "dims", "ranks", "layers", "resolutions", "kinds", "channels",
               "directions", "sigmas", "found", "at_start", "shift", "p_at_shift", "shift_before", "p_before",
               "p_start", "p_last", "verified", "p_verified", "p_before_verified", "evaluations", "pred_verified")
THRESHOLD = 0.5
REFINE = ("secant", "bisection")


# --- result -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CornerCase:
    """One searched row: a start moved along one dimension (``kind="single"``) or two (``"pair"``).

    shift: the corner-case shift t in σ units (None when not found); p_at_shift = p_y there (≤ 0.5);
    shift_before = t − tol (the neighbouring grid point) and p_before = p_y there (> 0.5); p_start = p_y
    at t = 0; at_start: p_start ≤ 0.5 already (then shift = 0 and there is no "before"); p_last: p_y at
    the last bracket point examined (at max_shift when not found). verified: a fresh re-classification
    gives p_y ≤ 0.5 at shift and > 0.5 at shift_before (p_verified, p_before_verified). evaluations:
    images classified for this row (the shared evaluation of its start not included). pred_verified: the
    class the re-classification predicts at the shift (None when the row was not found, or not
    re-classified: ``verify=False``, or a file written before it was recorded): p_y ≤ 0.5 is where the
    classifier stops being sure of the true class; with more than two classes the true class can still be
    the most likely one there (:attr:`flipped`).
    """

    kind: str
    start: int  # index into CornerCases.starts
    cls: int
    dims: tuple[int, ...]
    ranks: tuple[int, ...]  # 1-based ranks in the ranking
    layers: tuple[str, ...]
    resolutions: tuple[int, ...]
    kinds: tuple[str, ...]
    channels: tuple[int, ...]
    directions: tuple[int, ...]  # the degrading directions walked (±1)
    sigmas: tuple[float, ...]  # σ of each dimension (raw style units per σ)
    found: bool
    at_start: bool
    shift: float | None
    p_at_shift: float | None
    shift_before: float | None
    p_before: float | None
    p_start: float
    p_last: float | None
    verified: bool
    p_verified: float | None
    p_before_verified: float | None
    evaluations: int
    pred_verified: int | None = None

    @property
    def flipped(self) -> bool:
        """The re-classified corner-case image is predicted as another class than the true one."""
        return self.pred_verified is not None and self.pred_verified != self.cls

    def label(self) -> str:
        """e.g. ``dim 12 (b8.conv0[3])`` or ``dims 12+40 (b8.conv0[3] + b16.torgb[7])``."""
        where = " + ".join(f"{l}[{c}]" for l, c in zip(self.layers, self.channels))
        word = "dim" if len(self.dims) == 1 else "dims"
        return f"{word} {'+'.join(str(d) for d in self.dims)} ({where})"

    def signed_shifts(self) -> str:
        """The move that reaches the corner case, with its sign (the degrading direction): ``-7.47σ``, or
        ``+3.20σ / -3.20σ`` for a pair (one per dimension, in the order of ``dims``); "" when not found."""
        if self.shift is None:
            return ""
        return " / ".join(f"{d * self.shift:+.2f}σ" for d in self.directions)


@dataclass(frozen=True, eq=False)
class CornerCases:
    """The result of :meth:`CornerCaseSearch.search`.

    cases: the single-dimension rows (start-major, dimensions in ranking order); combinations: the rows of
    pairs of dimensions moved together. starts: float32 Tensor[N, S], the start styles; labels: int64
    Tensor[N]; p_start: float64 Tensor[N], p_y at each start; source: "population" (class means of the
    well-classified samples) or "given". evaluations: images classified by the search (all rows and the
    starts); rounds: batched evaluation steps (for :func:`authors_corner_search`: single-image
    evaluations); verify_evaluations: images classified by the verification. skipped_classes: classes
    without a start (no well-classified sample), each explained in ``warnings``.
    """

    cases: tuple[CornerCase, ...]
    combinations: tuple[CornerCase, ...]
    starts: torch.Tensor
    labels: torch.Tensor
    p_start: torch.Tensor
    source: str
    dims: tuple[int, ...]
    step: float
    max_shift: float
    tol: float
    evaluations: int
    rounds: int
    verify_evaluations: int
    skipped_classes: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    method: str = "batched-bisection"

    @property
    def style_dim(self) -> int:
        return int(self.starts.shape[1])

    @property
    def rows(self) -> tuple[CornerCase, ...]:
        return self.cases + self.combinations

    def summary(self) -> dict[str, Any]:
        """Counts for the single-dimension rows (``pairs`` = (class, dimension) pairs searched), the
        combinations separately, and the evaluation counts. ``found`` and ``verified`` count corner cases
        reached by a shift, ``flipped`` the verified ones whose image is predicted as another class (None
        for rows read from a file written before that was recorded); a pair whose start already has
        p_y ≤ 0.5 is counted in ``at_start`` only (its row has ``found`` and shift 0, but there is nothing to
        find: the start itself fails)."""
        def counts(rows):
            verified = [r for r in rows if r.found and not r.at_start and r.verified]
            return {"pairs": len(rows), "found": sum(r.found and not r.at_start for r in rows),
                    "verified": len(verified),
                    # None: a file written before the predicted class was recorded
                    "flipped": None if any(r.pred_verified is None for r in verified)
                    else sum(r.flipped for r in verified),
                    "at_start": sum(r.at_start for r in rows)}
        return {**counts(self.cases), "combinations": counts(self.combinations), "evaluations": self.evaluations,
                "rounds": self.rounds, "verify_evaluations": self.verify_evaluations,
                "skipped_classes": list(self.skipped_classes), "method": self.method}

    def find(self, start: int, dims: Sequence[int] | int) -> CornerCase | None:
        """The row of ``start`` along ``dims`` (one int or a pair), or None."""
        key = (int(dims),) if isinstance(dims, (int, np.integer)) else tuple(int(d) for d in dims)
        for r in self.rows:
            if r.start == start and r.dims == key:
                return r
        return None

    def styles(self, row: CornerCase, which: str = "shift") -> torch.Tensor:
        """float64 Tensor[S]: the styles of ``row`` at its corner shift (``"shift"``), at the grid point
        before it (``"before"``) or at its start (``"start"``), rebuilt exactly as the search built them.
        ``row`` must be one of this result's rows (a row of another search would be rebuilt from the wrong
        start)."""
        if not any(row is r or row == r for r in self.rows):
            raise FailatlasError(f"{row.label()} from start {row.start} (class {row.cls}) is not a row of this "
                                 "corner-case result; rebuild its styles with the result it came from")
        if which == "start":
            return self.starts[row.start].to(torch.float64)
        t = row.shift if which == "shift" else row.shift_before if which == "before" else "?"
        if t == "?":
            raise FailatlasError(f"which must be 'shift', 'before' or 'start', got {which!r}")
        if t is None:
            raise FailatlasError(f"{row.label()} from start {row.start} has no corner case ({which}); "
                                 + ("its start already has p_y ≤ 0.5, so there is no point before it" if row.at_start
                                    else "it was not found within max_shift"))
        return _walk_rows(self.starts.to(torch.float64), [row], torch.tensor([float(t)], dtype=torch.float64))[0]

    def to_csv(self, path: str | Path) -> Path:
        """Write every row (single dimensions, then combinations; columns :data:`CSV_COLUMNS`; tuples as
        ``;``-separated lists; floats as ``repr``; empty = none), atomically. Returns the path."""
        lines = [",".join(CSV_COLUMNS)]
        for r in self.rows:
            rec = dataclasses.asdict(r)
            lines.append(",".join(_csv_cell(rec[c]) for c in CSV_COLUMNS))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    @staticmethod
    def read_csv(path: str | Path) -> tuple[CornerCase, ...]:
        """The rows of a file written by :meth:`to_csv`."""
        path = Path(path)
        if not path.is_file():
            raise FailatlasError(f"corner-case table not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or tuple(lines[0].split(",")) not in (CSV_COLUMNS, CSV_COLUMNS[:-1]):  # [:-1]: older files
            raise FailatlasError(f"{path} is not a failatlas corner-case table (its header differs); write it "
                                 "again with CornerCases.to_csv")
        try:
            header = tuple(lines[0].split(","))
            return tuple(_row_from_cells(dict(zip(header, line.split(",")))) for line in lines[1:] if line)
        except (ValueError, KeyError) as exc:
            raise FailatlasError(f"corner-case table {path} is damaged ({exc})") from None

    def to_json(self, styles: bool = True) -> dict[str, Any]:
        """A JSON-ready dict: options, counts, warnings, every row, and (``styles=True``) the start styles
        (needed to rebuild the corner-case styles from the JSON)."""
        out = {
            "format": JSON_FORMAT, "method": self.method, "source": self.source, "style_dim": self.style_dim,
            "dims": list(self.dims), "step": self.step, "max_shift": self.max_shift, "tol": self.tol,
            "threshold": THRESHOLD, "summary": self.summary(), "evaluations": self.evaluations,
            "rounds": self.rounds, "verify_evaluations": self.verify_evaluations,
            "skipped_classes": list(self.skipped_classes), "warnings": list(self.warnings),
            "labels": self.labels.tolist(), "p_start": self.p_start.tolist(),
            "cases": [_row_json(r) for r in self.cases],
            "combinations": [_row_json(r) for r in self.combinations],
        }
        if styles:
            out["starts"] = self.starts.tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "corner cases") -> "CornerCases":
        """Rebuild from :meth:`to_json` output (with ``styles=True``)."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a corner-case result", JSON_VERSION, _JSON_HINT)
        with _io.rebuilding(source, "corner-case result", "search again"):
            if "starts" not in obj:
                raise ValueError("it was written without the start styles (to_json(styles=False))")
            starts = torch.tensor(obj["starts"], dtype=torch.float32).reshape(-1, int(obj["style_dim"]))
            return cls(
                cases=tuple(_row_from_json(r) for r in obj["cases"]),
                combinations=tuple(_row_from_json(r) for r in obj["combinations"]),
                starts=starts, labels=torch.tensor(obj["labels"], dtype=torch.int64),
                p_start=torch.tensor(obj["p_start"], dtype=torch.float64), source=str(obj["source"]),
                dims=tuple(int(d) for d in obj["dims"]), step=float(obj["step"]),
                max_shift=float(obj["max_shift"]), tol=float(obj["tol"]), evaluations=int(obj["evaluations"]),
                rounds=int(obj["rounds"]), verify_evaluations=int(obj["verify_evaluations"]),
                skipped_classes=tuple(int(c) for c in obj["skipped_classes"]),
                warnings=tuple(str(w) for w in obj["warnings"]), method=str(obj["method"]))

    @classmethod
    def read_json(cls, path: str | Path) -> "CornerCases":
        """A result written by :meth:`to_json` (``corner_cases.json`` of ``failatlas analyze``)."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "corner-case file", "a corner-case result", JSON_VERSION,
                                   _JSON_HINT)
        return cls.from_json(obj, source=f"corner-case file {path}")

    def format(self) -> str:
        """A short text table of the single-dimension rows and the combinations."""
        lines = [f"{'start':>5} {'cls':>3}  {'dims':<28} {'shift σ':>8} {'p_y':>7} {'p_before':>8} {'pred':>4}  "
                 "verified"]
        for r in self.rows:
            shift = "-" if r.shift is None else f"{r.shift:.2f}"
            p = "-" if r.p_at_shift is None else f"{r.p_at_shift:.3f}"
            pb = "-" if r.p_before is None else f"{r.p_before:.3f}"
            note = "at start" if r.at_start else ("" if r.found else "not found")
            pred = "-" if r.pred_verified is None else str(r.pred_verified)
            lines.append(f"{r.start:>5} {r.cls:>3}  {r.label():<28.28} {shift:>8} {p:>7} {pb:>8} {pred:>4}  "
                         f"{('yes' if r.verified else 'no') if r.found else '-':<3} {note}")
        s = self.summary()
        flipped = "the predicted class not recorded" if s["flipped"] is None else \
            f"{s['flipped']} predicted as another class"
        lines.append(f"{s['found']}/{s['pairs']} found, {s['verified']} verified ({flipped}); combinations "
                     f"{s['combinations']['found']}/{s['combinations']['pairs']}; {self.evaluations} evaluations")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, tuple):
        return ";".join(_csv_cell(x) for x in v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


_INT_TUPLES = ("dims", "ranks", "resolutions", "channels", "directions")
_STR_TUPLES = ("layers", "kinds")
_OPT_FLOATS = ("shift", "p_at_shift", "shift_before", "p_before", "p_last", "p_verified", "p_before_verified")


def _row_from_cells(c: dict[str, str]) -> CornerCase:
    def opt(v: str) -> float | None:
        return None if v == "" else float(v)

    def flag(v: str) -> bool:
        if v not in ("true", "false"):
            raise ValueError(f"expected true/false, got {v!r}")
        return v == "true"

    return CornerCase(
        kind=c["kind"], start=int(c["start"]), cls=int(c["cls"]),
        **{k: tuple(int(x) for x in c[k].split(";")) for k in _INT_TUPLES},
        **{k: tuple(c[k].split(";")) for k in _STR_TUPLES},
        sigmas=tuple(float(x) for x in c["sigmas"].split(";")),
        found=flag(c["found"]), at_start=flag(c["at_start"]), verified=flag(c["verified"]),
        **{k: opt(c[k]) for k in _OPT_FLOATS}, p_start=float(c["p_start"]), evaluations=int(c["evaluations"]),
        pred_verified=None if c.get("pred_verified", "") == "" else int(c["pred_verified"]))


def _row_json(r: CornerCase) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(r).items()}


def _row_from_json(d: dict[str, Any]) -> CornerCase:
    fields = {f.name for f in dataclasses.fields(CornerCase)}
    missing = sorted(fields - set(d) - {"pred_verified"})  # files written before it was recorded lack it
    if missing:
        raise KeyError(f"row lacks {missing}")
    return CornerCase(**{k: tuple(d[k]) if isinstance(d[k], list) else d[k] for k in fields if k in d})


# --- walks and evaluation -----------------------------------------------------------------------------

_backend: str | None = None


def _walk_backend() -> str:
    """The pure-torch reference of the walk op. The native op gives the same values but was not reliably
    faster (0.64× on an H200; 0.66–0.92× on 2 busy CPU cores, 1.10× idle: benchmarks/RESULTS.md), so it
    is not the default;
    ``FAILATLAS_WALK_BACKEND=native`` selects it."""
    global _backend
    if _backend is None:
        _backend = os.environ.get("FAILATLAS_WALK_BACKEND", "reference")
        if _backend not in ("native", "reference"):
            raise FailatlasError(f"FAILATLAS_WALK_BACKEND must be 'native' or 'reference', got {_backend!r}")
        if _backend == "native" and not _ext.available():
            _backend = "reference"
    return _backend


def _walk_rows(starts: torch.Tensor, rows: Sequence[CornerCase] | Sequence[Any], t: torch.Tensor) -> torch.Tensor:
    """float64 Tensor[P, S]: row p's start moved by t[p] σ along each of its dimensions.

    starts: float64 Tensor[N, S]; rows: objects with ``start``, ``dims``, ``directions``, ``sigmas``; t:
    float64 Tensor[P] (σ units). One :func:`walk_styles` call per start and dimension slot: the op walks
    start n along the K dims of its rows with one unit shift and per-row signs direction·t, so row p gets
    s₀ + σ_k·(direction_k·t_p)·e_k. A second dimension is walked the same way and its coordinate copied in
    (a walk changes only its own dimension).
    """
    P, S = len(rows), starts.shape[1]
    out = torch.empty(P, S, dtype=torch.float64)
    if P == 0:
        return out
    sigma = torch.zeros(S, dtype=torch.float64)
    for r in rows:
        for d, sg in zip(r.dims, r.sigmas):
            sigma[d] = sg
    one = torch.ones(1, dtype=torch.float64)
    backend = _walk_backend()
    by_start: dict[int, list[int]] = {}
    for p, r in enumerate(rows):
        by_start.setdefault(int(r.start), []).append(p)
    for n, idx in by_start.items():
        s0 = starts[n:n + 1]
        dims = torch.tensor([rows[p].dims[0] for p in idx], dtype=torch.int64)
        sign = torch.tensor([rows[p].directions[0] for p in idx], dtype=torch.float64) * t[idx]
        out[idx] = walk_styles(s0, dims, one, sigma, sign, backend=backend)[0, :, 0]
        two = [p for p in idx if len(rows[p].dims) > 1]
        if two:
            dims2 = torch.tensor([rows[p].dims[1] for p in two], dtype=torch.int64)
            sign2 = torch.tensor([rows[p].directions[1] for p in two], dtype=torch.float64) * t[two]
            moved = walk_styles(s0, dims2, one, sigma, sign2, backend=backend)[0, :, 0]
            out[two, dims2] = moved[torch.arange(len(two)), dims2]
    return out


class _Evaluator:
    """p_y of style vectors, in batches; counts the images classified."""

    def __init__(self, G: nn.Module, classifier: nn.Module, batch_size: int) -> None:
        self.G, self.C, self.batch_size = G, classifier, batch_size
        self.dtype, self.device = _model_dtype_device(G)
        self.cdtype, self.cdevice = _model_dtype_device(classifier)
        self.images = 0
        self.calls = 0

    @torch.no_grad()
    def __call__(self, s: torch.Tensor, y: torch.Tensor, with_pred: bool = False):
        """s: Tensor[P, S], y: int Tensor[P] → float64 Tensor[P] (CPU), softmax probability of y; with_pred:
        also the predicted classes, int64 Tensor[P]."""
        out, preds = [], []
        for i in range(0, s.shape[0], self.batch_size):
            img = self.G.synthesis_from_styles(s[i:i + self.batch_size].to(self.device, self.dtype), noise_mode="const")
            logits = check_logits(self.C(classifier_view(img).to(self.cdevice, self.cdtype)), img.shape[0], self.C)
            yy = y[i:i + self.batch_size].to(logits.device)
            out.append(torch.softmax(logits.double(), dim=1).gather(1, yy[:, None]).squeeze(1).cpu())
            preds.append(logits.argmax(dim=1).cpu())
        self.images += int(s.shape[0])
        self.calls += 1
        p = torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
        return (p, torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)) if with_pred else p


class _CachedEvaluator(_Evaluator):
    """p_y of walk rows from the activations that enter each style layer, cached once per start (the
    engine's prefix cache, :mod:`failatlas.engine.walks`): a row whose dimensions start at layer ℓ only
    runs layers ℓ, ℓ+1, …. Same values as :class:`_Evaluator` on the full style vectors, up to float
    rounding (≤ 1e-6 in p_y); the search's results are verified by full synthesis anyway."""

    MAX_STARTS = 256  # the cache holds every layer's input for every start (≈6 MB per start for cpu-small)

    def __init__(self, G: nn.Module, classifier: nn.Module, batch_size: int, starts: torch.Tensor) -> None:
        super().__init__(G, classifier, batch_size)
        self.net = G.synthesis_network
        self.layer_of = self.net.layer_of_dims()
        self.trace: list = []
        with torch.no_grad():
            self.net(starts.to(self.device, self.dtype), "const", self.trace)

    @torch.no_grad()
    def rows(self, starts64: torch.Tensor, rows: Sequence[Any], t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """float64 Tensor[P]: p_y of row p's start moved by t[p] σ along its dimensions."""
        s = _walk_rows(starts64, rows, t).to(self.device, self.dtype)
        first = torch.tensor([min(int(self.layer_of[d]) for d in r.dims) for r in rows], dtype=torch.long)
        start = torch.tensor([int(r.start) for r in rows], dtype=torch.long)
        out = torch.empty(len(rows), dtype=torch.float64)
        for li in first.unique().tolist():
            idx = (first == li).nonzero().squeeze(1)
            _, x_in, img_in = self.trace[li]
            for i in range(0, len(idx), self.batch_size):
                part = idx[i:i + self.batch_size]
                st = start[part].to(x_in.device)
                img = self.net.run_from(li, x_in[st], None if img_in is None else img_in[st], s[part], "const")
                logits = check_logits(self.C(classifier_view(img).to(self.cdevice, self.cdtype)), len(part), self.C)
                yy = y[part].to(logits.device)
                out[part] = torch.softmax(logits.double(), dim=1).gather(1, yy[:, None]).squeeze(1).cpu()
        self.images += len(rows)
        self.calls += 1
        return out


# --- setup shared by the batched search and the authors' procedure -------------------------------------


def _positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) or v <= 0:
        raise FailatlasError(f"{name} must be a positive number of σ, got {v!r}")
    return float(v)


@dataclass
class _Row:
    """Search state of one row (mutable; becomes a CornerCase)."""

    kind: str
    start: int
    cls: int
    dims: tuple[int, ...]
    directions: tuple[int, ...]
    sigmas: tuple[float, ...]
    phase: str = "bracket"  # bracket | bisect | before | done
    j: int = 0  # bracket index
    lo: float = 0.0
    hi: float = 0.0
    p_lo: float = float("nan")
    a: int = 0  # largest m known with p ≤ 0.5 (t = hi − m·tol)
    b: int = 0  # smallest m known with p > 0.5
    mb: int = 0  # m of lo
    aligned: bool = True  # hi − mb·tol == lo (then the grid point m = mb is exactly t − tol)
    p_a: float = float("nan")
    p_b: float = float("nan")
    m: int = 0  # the grid point being evaluated in the bisect phase
    same: int = 0  # how many refinement steps in a row moved the same end (a: > 0, b: < 0)
    found: bool = False
    at_start: bool = False
    shift: float | None = None
    p_at: float | None = None
    shift_before: float | None = None
    p_before: float | None = None
    p_start: float = float("nan")
    p_last: float | None = None
    evaluations: int = 0

    def t_of(self, m: int, tol: float) -> float:
        return self.lo if m == self.mb else self.hi - m * tol

    def next_m(self, refine: str) -> int:
        """The next grid point inside (a, b): the midpoint, or for ``"secant"`` where the straight line
        through (a, logit p_a) and (b, logit p_b) crosses 0 (logit p_y is close to linear in the shift near
        the flip, where p_y itself is a steep sigmoid); the midpoint again after two steps in a row moved
        the same end (the Illinois safeguard: at most about twice the bisection's steps)."""
        mid = (self.a + self.b) // 2
        if refine != "secant" or self.b - self.a <= 2 or abs(self.same) >= 2:
            return mid
        la, lb = _logit(self.p_a), _logit(self.p_b)
        if not lb > la:
            return mid
        x = self.a + (self.b - self.a) * (-la) / (lb - la)
        return min(max(math.floor(x), self.a + 1), self.b - 1)

    def refined(self, p: float) -> None:
        """Record p at grid point m: it becomes the new a (p ≤ 0.5) or b (p > 0.5)."""
        if p <= THRESHOLD:
            self.a, self.p_a, self.same = self.m, p, max(self.same, 0) + 1
        else:
            self.b, self.p_b, self.same = self.m, p, min(self.same, 0) - 1


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


MAX_BRACKETS = 1_000_000  # max_shift / step: bracket points per row
MAX_GRID = 1e12  # step / tol: grid points between two bracket points (exact in float64 and int64)


class _Setup:
    def __init__(self, G, classifier, ranking, population, dims, classes, starts, labels, pairs, n_pairs, step,
                 max_shift, tol, batch_size) -> None:
        if not isinstance(ranking, Ranking):
            raise FailatlasError(f"the ranking must be a Ranking (from GradientRanking.rank), got {type(ranking).__name__}")
        if ranking.style_dim != G.style_dim:
            raise FailatlasError(f"the ranking has {ranking.style_dim} style dimensions but the generator has "
                                 f"{G.style_dim}; it ranks another generator: rank this generator's dimensions")
        check_class_counts(G, classifier)
        self.step = _positive("step", step)
        self.max_shift = _positive("max_shift", max_shift)
        self.tol = _positive("tol", tol)
        if self.tol > self.step:
            raise FailatlasError(f"tol ({self.tol}) must not exceed step ({self.step})")
        if self.max_shift / self.step > MAX_BRACKETS or self.step / self.tol > MAX_GRID:
            raise FailatlasError(f"step {self.step:g}, max_shift {self.max_shift:g} and tol {self.tol:g} ask for more "
                                 f"than {MAX_BRACKETS:,} bracket points or {MAX_GRID:.0e} grid points per step; "
                                 "use a larger step or tol, or a smaller max_shift")
        self.batch_size = check_batch_size(batch_size, G)
        S = G.style_dim
        self.warnings: list[str] = []
        # dimensions
        if dims is None:
            dims = ranking.order[:10].tolist()
        elif isinstance(dims, (int, np.integer)):
            dims = ranking.order[:int(dims)].tolist()
        dims = [int(d) for d in (dims.tolist() if isinstance(dims, torch.Tensor) else dims)]
        if not dims or len(set(dims)) != len(dims) or min(dims) < 0 or max(dims) >= S:
            raise FailatlasError(f"dims must be distinct dimensions in [0, {S}), got {dims}")
        self.dims = tuple(dims)
        rank_of = ranking.rank_of()
        layout = ranking.layout
        self.info = {d: dict(rank=int(rank_of[d]), layer=layout[d].name, resolution=int(layout[d].resolution),
                             kind=layout[d].kind, channel=int(layout[d].channel)) for d in dims}
        self.direction = {}
        for d in dims:
            sgn = int(ranking.direction[d])
            if sgn == 0:
                self.warnings.append(f"dimension {d} has no gradient signal (direction 0); it is walked in the "
                                     "+ direction")
                sgn = 1
            self.direction[d] = sgn
        self.sigma = {d: float(ranking.sigma[d]) for d in dims}
        bad = [d for d in dims if not (self.sigma[d] > 0 and math.isfinite(self.sigma[d]))]
        if bad:
            raise FailatlasError(f"dimensions {bad} have σ = 0 (constant over the population): a shift in σ "
                                 "units moves nothing; leave them out of dims")
        # classes
        C = G.num_classes
        if classes is not None:
            classes = sorted({int(c) for c in classes})
            if not classes or min(classes) < 0 or max(classes) >= C:
                raise FailatlasError(f"classes must be labels in [0, {C}), got {list(classes)}")
        # starts
        skipped: list[int] = []
        if isinstance(starts, tuple) and labels is None and len(starts) == 2:
            starts, labels = starts
        if starts is not None:
            s = torch.as_tensor(starts)
            if s.ndim == 1:
                s = s[None]
            if s.ndim != 2 or s.shape[1] != S or not s.is_floating_point():
                raise FailatlasError(f"starts must be a float Tensor[N, {S}], got {list(s.shape)} {s.dtype}")
            if labels is None:
                raise FailatlasError("starts need their class labels: pass labels=Tensor[N] (or starts=(s, labels))")
            y = torch.as_tensor(labels).long().reshape(-1)
            if y.shape[0] != s.shape[0]:
                raise FailatlasError(f"{s.shape[0]} starts but {y.shape[0]} labels")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= C):
                raise FailatlasError(f"start labels must be in [0, {C}), got {int(y.min())}..{int(y.max())}")
            if classes is not None:
                keep = torch.isin(y, torch.tensor(classes))
                s, y = s[keep], y[keep]
            if not bool(torch.isfinite(s).all()):
                raise FailatlasError("starts contain NaN or infinite values")
            self.source = "given"
        else:
            if not isinstance(population, Population):
                raise FailatlasError("search() needs a Population (for the class-mean starts) or explicit starts")
            if population.style_dim != S:
                raise FailatlasError(f"the population has {population.style_dim} style dimensions but the "
                                     f"generator has {S}; sample the population with this generator")
            rows_s, rows_y = [], []
            if classes is None and population.classes is not None:  # a population of some classes: those
                classes = sorted(population.classes)
            for c in (classes if classes is not None else range(C)):
                mask = (population.y == c) & population.well
                if not bool(mask.any()):
                    n_c = int((population.y == c).sum())
                    skipped.append(c)
                    self.warnings.append(f"class {c} skipped: none of its {n_c} samples in the population is "
                                         "well classified, so it has no average image to start from (use a "
                                         "larger population or give starts)")
                    continue
                rows_s.append(population.s[mask].to(torch.float64).mean(dim=0).to(population.s.dtype))
                rows_y.append(c)
            if not rows_s:
                raise FailatlasError("no class has a well-classified sample in the population, so there is no "
                                     "start; use a larger population or pass starts")
            s, y = torch.stack(rows_s), torch.tensor(rows_y, dtype=torch.int64)
            self.source = "population"
        if s.shape[0] == 0:
            raise FailatlasError("no start is left to search (check classes against the start labels)")
        self.starts = s.detach().to(torch.float32).cpu().contiguous()
        self.labels = y
        self.skipped = tuple(skipped)
        # rows
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 0:
            raise FailatlasError(f"n_pairs must be a non-negative integer, got {n_pairs!r}")
        top = self.dims[:int(n_pairs)] if pairs else ()
        combos = [(a, b) for i, a in enumerate(top) for b in top[i + 1:]]
        self.rows: list[_Row] = []
        for n in range(self.starts.shape[0]):
            for key in [(d,) for d in self.dims] + combos:
                self.rows.append(_Row(kind="single" if len(key) == 1 else "pair", start=n, cls=int(y[n]), dims=key,
                                      directions=tuple(self.direction[d] for d in key),
                                      sigmas=tuple(self.sigma[d] for d in key)))
        # bracket points: step, 2·step, … and max_shift last
        J = max(1, math.ceil(self.max_shift / self.step - 1e-9))
        self.grid = [min((j + 1) * self.step, self.max_shift) for j in range(J)]

    def open_bracket(self, r: _Row, j: int, p_hi: float) -> None:
        """Row r has p ≤ 0.5 at grid[j] (and > 0.5 at the point before)."""
        r.hi = self.grid[j]
        r.lo = self.grid[j - 1] if j > 0 else 0.0
        r.mb = max(1, math.ceil((r.hi - r.lo) / self.tol - 1e-9))
        r.aligned = abs((r.hi - r.mb * self.tol) - r.lo) <= 1e-9 * max(1.0, r.hi)
        r.a, r.b, r.p_a = 0, r.mb, p_hi
        r.p_b = r.p_lo
        r.phase = "bisect"

    def finish(self, G, classifier, rows: list[_Row], evaluator: _Evaluator, rounds: int, verify: bool,
               method: str) -> CornerCases:
        # verification: styles rebuilt, images synthesized afresh, classified again
        starts64 = self.starts.to(torch.float64)
        found = [r for r in rows if r.found]
        checker = _Evaluator(G, classifier, self.batch_size)
        verified: dict[int, tuple[bool, float | None, float | None, int | None]] = {}
        if verify and found:
            t = torch.tensor([r.shift for r in found], dtype=torch.float64)
            before = [r for r in found if not r.at_start]
            with _eval_mode(G, classifier):
                p_at, pred_at = checker(_walk_rows(starts64, found, t), self.labels[[r.start for r in found]],
                                        with_pred=True)
                tb = torch.tensor([r.shift_before for r in before], dtype=torch.float64)
                p_bef = checker(_walk_rows(starts64, before, tb), self.labels[[r.start for r in before]])
            pb = dict(zip(map(id, before), p_bef.tolist()))
            for r, p, c in zip(found, p_at.tolist(), pred_at.tolist()):
                q = pb.get(id(r))
                ok = p <= THRESHOLD and (r.at_start or (q is not None and q > THRESHOLD))
                verified[id(r)] = (ok, p, q, int(c))
        out = []
        for r in rows:
            ok, pv, pbv, pred = verified.get(id(r), (False, None, None, None))
            info = [self.info[d] for d in r.dims]
            out.append(CornerCase(
                kind=r.kind, start=r.start, cls=r.cls, dims=r.dims, ranks=tuple(i["rank"] for i in info),
                layers=tuple(i["layer"] for i in info), resolutions=tuple(i["resolution"] for i in info),
                kinds=tuple(i["kind"] for i in info), channels=tuple(i["channel"] for i in info),
                directions=r.directions, sigmas=r.sigmas, found=r.found, at_start=r.at_start,
                shift=r.shift, p_at_shift=r.p_at, shift_before=r.shift_before, p_before=r.p_before,
                p_start=r.p_start, p_last=r.p_last, verified=ok, p_verified=pv, p_before_verified=pbv,
                evaluations=r.evaluations, pred_verified=pred))
        p_start = torch.tensor([next((r.p_start for r in rows if r.start == n), float("nan"))
                                for n in range(self.starts.shape[0])], dtype=torch.float64)
        return CornerCases(
            cases=tuple(c for c in out if c.kind == "single"), combinations=tuple(c for c in out if c.kind == "pair"),
            starts=self.starts, labels=self.labels, p_start=p_start, source=self.source, dims=self.dims,
            step=self.step, max_shift=self.max_shift, tol=self.tol, evaluations=evaluator.images, rounds=rounds,
            verify_evaluations=checker.images, skipped_classes=self.skipped, warnings=tuple(self.warnings),
            method=method)


# --- the batched search -----------------------------------------------------------------------------


class CornerCaseSearch:
    """Find corner cases along the top dimensions of a ranking, all rows at once (DESIGN §4.4).

    >>> cases = CornerCaseSearch(G, classifier, ranking).search(population)
    >>> cases.summary()            # {"pairs": 100, "found": …, "verified": …, "combinations": {…}, …}

    ``batch_size`` images (None: 64 on CPU, 512 on an accelerator) go through the generator and the
    classifier at once; a round larger than that is split, and still counts as one round.
    ``backend="engine"`` (default) synthesizes each start once and re-runs only the layers from the walked
    dimension's on (the prefix cache; up to 256 starts, beyond that it falls back); ``"reference"``
    synthesizes every image from its full style vector.
    """

    def __init__(self, generator: nn.Module, classifier: nn.Module, ranking: Ranking,
                 batch_size: int | None = None, progress_bar: bool | None = None, backend: str = "engine") -> None:
        if backend not in ("engine", "reference"):
            raise FailatlasError(f"backend must be 'engine' (prefix cache) or 'reference' (full synthesis per "
                                 f"image), got {backend!r}")
        self.generator, self.classifier, self.ranking = generator, classifier, ranking
        self.batch_size = batch_size
        self.progress_bar = progress_bar
        self.backend = backend
        if isinstance(ranking, Ranking) and ranking.style_dim != generator.style_dim:
            raise FailatlasError(f"the ranking has {ranking.style_dim} style dimensions but the generator has "
                                 f"{generator.style_dim}; it ranks another generator: rank this generator's "
                                 "dimensions")
        check_class_counts(generator, classifier)

    def search(self, population: Population | None = None, dims: Sequence[int] | int | None = None,
               classes: Sequence[int] | None = None, starts: torch.Tensor | None = None,
               labels: torch.Tensor | None = None, pairs: bool = True, n_pairs: int = 3, step: float = 5.0,
               max_shift: float = 100.0, tol: float = 0.01, verify: bool = True,
               refine: str = "secant") -> CornerCases:
        """Search every (start, dimension) row and every pair of the top ``n_pairs`` dims.

        population: gives the starts (mean s of each class's well-classified samples; a class without one
        is skipped and named in ``warnings``). dims: the dimensions to walk (None: the ranking's top 10;
        an int k: its top k). classes: restrict to these classes (None: all, or the population's classes
        when it was drawn from some). starts: Tensor[N, S] to use instead, with ``labels`` Tensor[N] (or
        ``starts=(s, labels)``). step, max_shift, tol: in σ units.
        refine: how the bracket is narrowed to ``tol`` — ``"secant"`` (default: each step goes where logit
        p_y crosses 0 on the line through the bracket's ends, with a bisection safeguard) or
        ``"bisection"``. Both end on two neighbouring grid points with p_y ≤ 0.5 and > 0.5, so where p_y
        crosses 0.5 once inside the bracket they return the same shift; secant needs fewer evaluations.
        """
        if refine not in REFINE:
            raise FailatlasError(f"refine must be one of {', '.join(REFINE)}, got {refine!r}")
        G, C = self.generator, self.classifier
        setup = _Setup(G, C, self.ranking, population, dims, classes, starts, labels, pairs, n_pairs, step,
                       max_shift, tol, self.batch_size)
        rows, tol = setup.rows, setup.tol
        starts64 = setup.starts.to(torch.float64)
        cached = self.backend == "engine" and setup.starts.shape[0] <= _CachedEvaluator.MAX_STARTS
        with _eval_mode(G, C):
            ev = _CachedEvaluator(G, C, setup.batch_size, setup.starts) if cached else _Evaluator(G, C, setup.batch_size)

        def evaluate(rows_: list[_Row], t_: list[float]) -> list[float]:
            tt = torch.tensor(t_, dtype=torch.float64)
            y_ = setup.labels[[r.start for r in rows_]]
            if cached:
                return ev.rows(starts64, rows_, tt, y_).tolist()
            return ev(_walk_rows(starts64, rows_, tt), y_).tolist()

        disable = None if self.progress_bar is None else not self.progress_bar
        rounds = 0
        with _eval_mode(G, C), progress(len(rows), desc="corner cases", unit="row", disable=disable) as bar:
            p0 = ev(starts64, setup.labels)
            rounds += 1
            for r in rows:
                r.p_start = r.p_lo = float(p0[r.start])
                if r.p_start <= THRESHOLD:
                    r.found = r.at_start = True
                    r.shift, r.p_at, r.phase = 0.0, r.p_start, "done"
                    bar.update(1)
            while True:
                pending = [r for r in rows if r.phase != "done"]
                if not pending:
                    break
                t = []
                for r in pending:
                    if r.phase == "bracket":
                        t.append(setup.grid[r.j])
                    elif r.phase == "bisect":
                        r.m = r.next_m(refine)
                        t.append(r.t_of(r.m, tol))
                    else:  # "before": the grid point below t was not t − tol (unaligned bracket)
                        t.append(r.shift - tol)
                p = evaluate(pending, t)
                rounds += 1
                for r, tt, pp in zip(pending, t, p):
                    r.evaluations += 1
                    if r.phase == "bracket":
                        r.p_last = pp
                        if pp <= THRESHOLD:
                            setup.open_bracket(r, r.j, pp)
                        else:
                            r.p_lo = pp
                            r.j += 1
                            if r.j == len(setup.grid):
                                r.phase = "done"
                    elif r.phase == "bisect":
                        r.refined(pp)
                    else:
                        r.shift_before, r.p_before, r.phase = tt, pp, "done"
                    if r.phase == "bisect" and r.b - r.a == 1:
                        r.found, r.shift, r.p_at = True, r.t_of(r.a, tol), r.p_a
                        if r.b < r.mb or r.aligned:
                            r.shift_before, r.p_before, r.phase = r.t_of(r.b, tol), r.p_b, "done"
                        else:
                            r.phase = "before"
                    if r.phase == "done":
                        bar.update(1)
        return setup.finish(G, C, rows, ev, rounds, verify, f"batched-{refine}")


def find_corner_cases(generator: nn.Module, classifier: nn.Module, ranking: Ranking,
                      population: Population | None = None, *, dims: Sequence[int] | int | None = None,
                      classes: Sequence[int] | None = None, starts: torch.Tensor | None = None,
                      labels: torch.Tensor | None = None, pairs: bool = True, n_pairs: int = 3, step: float = 5.0,
                      max_shift: float = 100.0, tol: float = 0.01, verify: bool = True,
                      batch_size: int | None = None, progress_bar: bool | None = None,
                      backend: str = "engine", refine: str = "secant") -> CornerCases:
    """Functional form of :meth:`CornerCaseSearch.search`."""
    return CornerCaseSearch(generator, classifier, ranking, batch_size=batch_size,
                            progress_bar=progress_bar, backend=backend).search(
        population, dims=dims, classes=classes, starts=starts, labels=labels, pairs=pairs, n_pairs=n_pairs,
        step=step, max_shift=max_shift, tol=tol, verify=verify, refine=refine)


# --- the authors' procedure (reference for tests and benchmarks) ----------------------------------------


def authors_corner_search(generator: nn.Module, classifier: nn.Module, ranking: Ranking,
                          population: Population | None = None, *, dims: Sequence[int] | int | None = None,
                          classes: Sequence[int] | None = None, starts: torch.Tensor | None = None,
                          labels: torch.Tensor | None = None, pairs: bool = False, n_pairs: int = 3,
                          step: float = 5.0, max_shift: float = 100.0, tol: float = 0.01,
                          verify: bool = False) -> CornerCases:
    """The authors' procedure, one image at a time: for each row, classify the start, then step by
    ``step`` σ until p_y ≤ 0.5 (giving up beyond ``max_shift``), then step back by ``tol`` σ until
    p_y > 0.5; the corner case is the last point with p_y ≤ 0.5. Slow (up to step/tol evaluations per
    row): a reference for tests and benchmarks. Same arguments and result type as
    :func:`find_corner_cases`; ``rounds`` = ``evaluations`` (every evaluation is one image), and each row's
    ``evaluations`` includes the evaluation of its start.
    """
    G, C = generator, classifier
    setup = _Setup(G, C, ranking, population, dims, classes, starts, labels, pairs, n_pairs, step, max_shift,
                   tol, 1)
    tol = setup.tol
    ev = _Evaluator(G, C, 1)
    starts64 = setup.starts.to(torch.float64)

    def p_at(r: _Row, t: float) -> float:
        r.evaluations += 1
        s = _walk_rows(starts64, [r], torch.tensor([t], dtype=torch.float64))
        return float(ev(s, setup.labels[[r.start]])[0])

    with _eval_mode(G, C):
        for r in setup.rows:
            r.p_start = r.p_lo = p_at(r, 0.0)
            if r.p_start <= THRESHOLD:
                r.found = r.at_start = True
                r.shift, r.p_at = 0.0, r.p_start
                continue
            for j in range(len(setup.grid)):
                p = r.p_last = p_at(r, setup.grid[j])
                if p <= THRESHOLD:
                    setup.open_bracket(r, j, p)
                    break
                r.p_lo = p
            if r.phase != "bisect":
                continue
            m, prev_t, prev_p = 0, r.hi, r.p_a
            while True:
                m += 1
                t = r.t_of(m, tol)  # m = mb is lo, where p > 0.5 was measured: the loop ends there
                p = p_at(r, t)
                if p > THRESHOLD:
                    break
                prev_t, prev_p = t, p
            r.found, r.shift, r.p_at, r.shift_before, r.p_before = True, prev_t, prev_p, t, p
    return setup.finish(G, C, setup.rows, ev, ev.images, verify, "authors-stepping")
