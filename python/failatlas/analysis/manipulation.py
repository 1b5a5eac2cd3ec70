"""The manipulation grid of Fig. 5 (DESIGN §4.5): a start walked along its top dimensions.

Columns are dimensions; row i moves the start of class ``cls`` by ``fractions[i]`` × that dimension's
corner-case shift (from a :class:`~failatlas.analysis.corners.CornerCases` result), in its degrading
direction. Row 0 (fraction 0) is the start itself; at fraction 1 a found corner case has p_y ≤ 0.5. A
dimension without a corner case (none within ``max_shift``) uses ``max_shift`` instead, and says so in
``notes``; one whose start is already at p_y ≤ 0.5 has shift 0 (every row is the start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import FailatlasError
from ..models.adapter import classifier_view
from ..ops import walk_styles
from .corners import CornerCases, _Evaluator, _walk_backend
from .population import _eval_mode, check_batch_size, check_class_counts, check_logits

FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5)
JSON_FORMAT = "failatlas-manipulation-grid"


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator images Tensor[N, 1, R, R] in [-1, 1] → uint8 Tensor[N, R, R] (0 = −1, 255 = +1)."""
    return ((images[:, 0].float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu()


@dataclass(frozen=True, eq=False)
class ManipulationGrid:
    """The result of :func:`manipulation_grid`.

    images: uint8 Tensor[rows, cols, R, R] (R = 32); p_y: float64 Tensor[rows, cols]; shifts: float64
    Tensor[rows, cols], the shift of each cell in σ units (fraction × base shift); dims: the column
    dimensions; fractions: the row fractions; cls: the class; start: the index of the start in the corner-
    case result; base_shifts: each column's corner shift (or max_shift); found: whether each column had a
    corner case; layers/channels/directions: each column's layer, channel and degrading direction; notes:
    explanations (columns that used max_shift, or whose start is already at p_y ≤ 0.5).
    """

    images: torch.Tensor
    p_y: torch.Tensor
    shifts: torch.Tensor
    dims: tuple[int, ...]
    fractions: tuple[float, ...]
    cls: int
    start: int
    base_shifts: tuple[float, ...]
    found: tuple[bool, ...]
    layers: tuple[str, ...]
    channels: tuple[int, ...]
    directions: tuple[int, ...]
    max_shift: float
    notes: tuple[str, ...] = ()
    earlier_failures: tuple[tuple[int, float, float], ...] = ()  # (dim, fraction, p_y): p_y ≤ 0.5 before 1

    def to_json(self, images: bool = False) -> dict[str, Any]:
        """A JSON-ready dict of everything but the images (``images=True``: those too, as nested lists)."""
        out = {"format": JSON_FORMAT, "cls": self.cls, "start": self.start, "dims": list(self.dims),
               "fractions": list(self.fractions), "base_shifts": list(self.base_shifts), "found": list(self.found),
               "layers": list(self.layers), "channels": list(self.channels), "directions": list(self.directions),
               "max_shift": self.max_shift, "notes": list(self.notes),
               "earlier_failures": [list(e) for e in self.earlier_failures], "p_y": self.p_y.tolist(),
               "shifts": self.shifts.tolist()}
        if images:
            out["images"] = self.images.tolist()
        return out


def manipulation_grid(generator: nn.Module, classifier: nn.Module, corner_cases: CornerCases, cls: int,
                      dims: Sequence[int] | None = None, fractions: Sequence[float] = FRACTIONS,
                      batch_size: int | None = None) -> ManipulationGrid:
    """Fig. 5's grid for class ``cls`` (its first start in ``corner_cases``).

    dims: the column dimensions, each searched by ``corner_cases`` (None: the searched ones, in ranking
    order, at most 10). fractions: the rows, multiples of each column's corner shift (≥ 0). All cells are
    built with one :func:`~failatlas.ops.walk_styles` call (start × dims × fractions), synthesized and
    classified.
    """
    G = generator
    check_class_counts(G, classifier)
    if not isinstance(corner_cases, CornerCases):
        raise FailatlasError(f"manipulation_grid takes a CornerCases result, got {type(corner_cases).__name__}")
    if corner_cases.style_dim != G.style_dim:
        raise FailatlasError(f"the corner cases have {corner_cases.style_dim} style dimensions but the generator "
                             f"has {G.style_dim}; they were searched with another generator")
    cls = int(cls)
    starts = [n for n in range(corner_cases.labels.shape[0]) if int(corner_cases.labels[n]) == cls]
    if not starts:
        have = sorted({int(c) for c in corner_cases.labels.tolist()})
        why = f" (class {cls} was skipped: it has no well-classified sample)" if cls in corner_cases.skipped_classes else ""
        raise FailatlasError(f"the corner cases have no start of class {cls}{why}; classes with a start: {have}")
    start = starts[0]
    rows = {r.dims[0]: r for r in corner_cases.cases if r.start == start}
    if dims is None or isinstance(dims, (int, np.integer)):  # an int k: the first k searched, as the search
        dims = [d for d in corner_cases.dims if d in rows][:10 if dims is None else int(dims)]
    dims = [int(d) for d in (dims.tolist() if isinstance(dims, torch.Tensor) else dims)]
    missing = [d for d in dims if d not in rows]
    if not dims or missing:
        raise FailatlasError(f"dimensions {missing or dims} were not searched for class {cls}; searched: "
                             f"{sorted(rows)}")
    fr = [float(f) for f in (fractions.tolist() if isinstance(fractions, torch.Tensor) else
                             [fractions] if isinstance(fractions, (int, float)) else fractions)]
    if not fr or any(not (0 <= f < math.inf) for f in fr):
        raise FailatlasError(f"fractions must be finite non-negative numbers, got {fr}")
    cases = [rows[d] for d in dims]
    base, notes = [], []
    for c in cases:
        if c.found:
            base.append(float(c.shift))
            if c.at_start:
                notes.append(f"dim {c.dims[0]}: the start already has p_y = {c.p_start:.3f} ≤ 0.5 (shift 0)")
        else:
            base.append(float(corner_cases.max_shift))
            notes.append(f"dim {c.dims[0]}: no corner case within {corner_cases.max_shift:g} σ; its column uses "
                         f"max_shift = {corner_cases.max_shift:g} σ")
    S = G.style_dim
    sigma = torch.zeros(S, dtype=torch.float64)
    for c in cases:
        sigma[c.dims[0]] = c.sigmas[0]
    sign = torch.tensor([c.directions[0] * b for c, b in zip(cases, base)], dtype=torch.float64)
    s0 = corner_cases.starts[start:start + 1].to(torch.float64)
    walk = walk_styles(s0, torch.tensor(dims, dtype=torch.int64), torch.tensor(fr, dtype=torch.float64), sigma,
                       sign, backend=_walk_backend())[0]  # [K, M, S]
    K, M = len(dims), len(fr)
    s = walk.transpose(0, 1).reshape(M * K, S)  # rows = fractions, columns = dims
    ev = _Evaluator(G, classifier, check_batch_size(batch_size, G))
    images, probs = [], []
    with _eval_mode(G, classifier), torch.no_grad():
        for i in range(0, M * K, ev.batch_size):
            img = G.synthesis_from_styles(s[i:i + ev.batch_size].to(ev.device, ev.dtype), noise_mode="const")
            logits = check_logits(classifier(classifier_view(img).to(ev.cdevice, ev.cdtype)), img.shape[0], classifier, i)
            probs.append(torch.softmax(logits.double(), dim=1)[:, cls].cpu())
            images.append(to_uint8(img))
    p = torch.cat(probs)
    img = torch.cat(images)
    earlier = []  # a cell short of the column's shift that already fails: the bracket stepped over a dip
    for j, c in enumerate(cases):
        early = sorted((f, float(p[i * K + j])) for i, f in enumerate(fr)
                       if not c.at_start and 0 < f < 1 and float(p[i * K + j]) <= 0.5)
        if early:
            f, q = early[0]  # the nearest
            earlier.append((c.dims[0], f, q))
            what = ("the corner shift" if c.found else
                    f"max_shift, within which the search found no corner case")
            notes.append(f"dim {c.dims[0]}: p_y = {q:.3f} ≤ 0.5 already at {f:g} × {what} "
                         f"({f * c.directions[0] * base[j]:+.2f}σ): the search brackets in steps of "
                         f"{corner_cases.step:g}σ and stepped over this nearer failure; search with a smaller step "
                         "(analyze --corner-step) to find it")
    return ManipulationGrid(
        images=img.reshape(M, K, *img.shape[1:]), p_y=p.reshape(M, K),
        shifts=torch.tensor(fr, dtype=torch.float64)[:, None] * torch.tensor(base, dtype=torch.float64)[None, :],
        dims=tuple(dims), fractions=tuple(fr), cls=cls, start=start, base_shifts=tuple(base),
        found=tuple(bool(c.found) for c in cases), layers=tuple(c.layers[0] for c in cases),
        channels=tuple(c.channels[0] for c in cases), directions=tuple(c.directions[0] for c in cases),
        max_shift=float(corner_cases.max_shift), notes=tuple(notes), earlier_failures=tuple(earlier))
