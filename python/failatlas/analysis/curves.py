"""Accuracy as a function of the distance to the well-classified centre (DESIGN §4.6, Fig. 6).

For one classifier (its ranking and its own well/mis-classified labels of the population):

    centre  = mean s of the well-classified samples of the sample's own class (``centre="class"``, the
              default) or of all classes (``centre="global"``),
    d_i     = ‖s_i[D] − centre[D]‖₂ on the raw s, D = the top-K dimensions of the classifier's ranking
              (K = 100 by default; ``k=None`` or ``"all"``: every dimension),
    u_i     = (d_i − min_well d) / (0.7 · max_well (d − min_well d))      (the normalized distance),
    edges   = ``np.histogram_bin_edges`` of the well-classified u (20 bins, from 0 to 1/0.7 ≈ 1.43),
    acc_j   = n_well_j / (n_well_j + n_mis_j) in bin j (NaN for an empty bin);

bins follow ``np.histogram``: [e_j, e_{j+1}), the last one closed. The plotted bins are those whose centre
is < 1 (the 0.7 factor makes u = 1 fall inside the well-classified range: bins 0..13 of 20).

Decisions:

* The overall curve measures each sample from the average of *its own class* (DESIGN §4.6 says "mean s of
  well-classified samples" and leaves the class open; the paper's "average digit" is "the mean over a
  class-conditional population"). Measured on the shipped models (n = 10,000, K = 100, README "The
  analysis"): with one centre for all classes the corrupted-trained classifier's curve rises from 0.739
  to 0.973 over its first four bins before falling (the mean of all digits is no digit: samples near it
  are ambiguous between classes; slope −0.030); with class centres it starts at 1.000 and falls (slope
  −0.296), though not monotonically: it rises 9.4 points into a bin of 97 samples and 17.9 into its last
  bin, of 13 (``max_rise``).
  ``centre="global"`` keeps the other reading. A class without any well-classified sample has no centre: its samples are left out of the
  overall curve and listed in ``classes_without_centre``. With class centres the overall curve still has
  one normalization: min_well and the scale are taken over the well-classified distances of all classes
  together, so a bin is the same distance from its own class's centre for every class. ``summary.json``
  names the centre each curve used (``centre``).
* Mis-classified samples outside the edges (closer to the centre than every well-classified sample, or
  farther than all of them) are *dropped* from the bins, as ``np.histogram`` does with explicit edges, and
  counted in ``n_below`` / ``n_beyond``. Clipping them into the end bins would distort the first bin (which
  is plotted); the last bins lie beyond u = 1 and are never plotted anyway.
* Per-class curves use their own centre, normalization and edges (all from that class's well-classified
  samples) and, by default, the top-K dimensions of the *global* ranking (``class_dims="class"``: the
  class's own ranking, from ``rank(..., per_class=True)``). A class with fewer than two well-classified
  samples at distinct distances has no curve; it is listed in ``skipped_classes``.
* ``mean_accuracy`` is the unweighted mean over the plotted non-empty bins; ``slope`` is the least-squares
  slope of accuracy vs bin centre over the same bins (NaN with fewer than two): the resilience summary, more
  negative = degrades faster.
* The per-sample normalized distances are kept on the result (``distance``) and written to JSON (with the
  centres, ``centre_values``: what :meth:`CurveResult.read_json` needs to rebuild the result exactly), not
  to CSV, which holds the curve only.

Comparing classifiers on one generated population: the s are shared, the labels are not. Use
:func:`with_classifier` to re-classify a population with another classifier (images are re-synthesized
from the stored s), rank with that classifier, then compute its curve; :func:`classifier_curves` does the
three steps for several classifiers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .. import _io
from .._progress import progress
from ..errors import FailatlasError, ResultFileError
from ..models.adapter import classifier_view
from .population import (Population, _eval_mode, _model_dtype_device, _who, check_batch_size, check_class_counts,
                         check_logits, check_not_probabilities, classify)
from .ranking import Ranking

BINS = 20
SCALE = 0.7  # the normalization's fraction of the farthest well-classified distance (DESIGN §4.6)
DEFAULT_K = 100
JSON_FORMAT = "failatlas-accuracy-curve"
#: version 2 added ``centre_values`` and ``distance`` (what :meth:`CurveResult.read_json` rebuilds the result
#: from); files of version 1 (no ``version`` key) hold the curve only
JSON_VERSION = 2
CURVES_FORMAT = "failatlas-accuracy-curves"  # curves.json of `failatlas analyze`: {classifier: curve}
_CURVE_HINT = ("pass the curves.json of a `failatlas analyze` run, a file written from CurveResult.to_json(), or "
               "a compare.json to Comparison.read_json")
CSV_COLUMNS = ("class", "bin", "left", "right", "centre", "n_well", "n_mis", "accuracy", "plotted", "ci_low",
               "ci_high")
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95% intervals
CLASS_DIMS = ("global", "class")
CENTRES = ("class", "global")


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True, eq=False)
class CurveResult:
    """An accuracy-vs-distance curve (CPU tensors; floats in float64).

    bin_edges: Tensor[bins+1] and bin_centres: Tensor[bins] in normalized-distance units; accuracy:
    Tensor[bins] (NaN where a bin is empty); n_well, n_mis: int64 Tensor[bins]; plotted: bool Tensor[bins]
    (centre < 1); k: number of dimensions the distance used, dims: those dimensions (best first);
    centre: Tensor[k], the well-classified mean of s on dims (raw style units; with class centres
    Tensor[C, k], row c the centre of class c, NaN for a class without one); min_well, scale: the
    normalization u = (d − min_well) / scale in raw style units; n_below / n_beyond: mis-classified samples
    outside the edges (not binned); distance: Tensor[n], every sample's normalized distance; label: the
    class (None: all classes); per_class: class → its curve; skipped_classes: classes without a curve.
    """

    bin_edges: torch.Tensor
    bin_centres: torch.Tensor
    accuracy: torch.Tensor
    n_well: torch.Tensor
    n_mis: torch.Tensor
    plotted: torch.Tensor
    k: int
    dims: tuple[int, ...]
    centre: torch.Tensor
    min_well: float
    scale: float
    n_below: int
    n_beyond: int
    distance: torch.Tensor
    label: int | None = None
    per_class: dict[int, "CurveResult"] = field(default_factory=dict)
    skipped_classes: tuple[int, ...] = ()
    class_dims: str = "global"
    centre_mode: str = "global"
    classes_without_centre: tuple[int, ...] = ()
    n_without_centre: int = 0  # samples of those classes (all mis-classified), left out of the bins

    @property
    def bins(self) -> int:
        return int(self.accuracy.shape[0])

    @property
    def n(self) -> int:
        return int(self.distance.shape[0])

    def _used(self) -> torch.Tensor:
        return self.plotted & ~torch.isnan(self.accuracy)

    @property
    def mean_accuracy(self) -> float:
        """Unweighted mean accuracy over the plotted non-empty bins (NaN if there are none)."""
        used = self._used()
        return float(self.accuracy[used].mean()) if bool(used.any()) else float("nan")

    @property
    def slope(self) -> float:
        """Least-squares slope of accuracy vs bin centre over the plotted non-empty bins (accuracy per unit
        of normalized distance; NaN with fewer than two such bins)."""
        used = self._used()
        x, y = self.bin_centres[used].numpy(), self.accuracy[used].numpy()
        if x.shape[0] < 2:
            return float("nan")
        xc = x - x.mean()
        return float((xc * (y - y.mean())).sum() / (xc * xc).sum())

    def interval(self, z: float = Z95) -> tuple[torch.Tensor, torch.Tensor]:
        """Wilson score interval of each bin's accuracy (``z`` = 1.96: 95%) → (low, high), float64 Tensor[bins],
        NaN for an empty bin. A bin of 48 samples at 0.8 spans about ±0.11: rises between sparse bins
        smaller than that are noise, not a property of the classifier."""
        n = (self.n_well + self.n_mis).double()
        p = self.accuracy.double()
        z2 = z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z / (1 + z2 / n) * torch.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
        empty = n == 0
        nan = torch.full_like(p, float("nan"))
        return (torch.where(empty, nan, (centre - half).clamp(0, 1)),
                torch.where(empty, nan, (centre + half).clamp(0, 1)))

    def not_plotted(self) -> dict[str, Any]:
        """The samples the plot leaves out (DESIGN §4.6 draws bins with centre < 1): those in the other bins,
        the mis-classified ones beyond the last bin's edge (``n_beyond``) or below the first (``n_below``),
        and, with class centres, the samples of classes without a well-classified sample (no centre, no
        distance: ``n_without_centre``, all mis-classified). ``{"n_well", "n_mis", "accuracy",
        "n_without_centre"}`` (accuracy None when there are none; n_mis includes n_without_centre). Often
        where a classifier fails most: a report should show them beside the curve."""
        rest = ~self.plotted
        well = int(self.n_well[rest].sum())
        mis = int(self.n_mis[rest].sum()) + self.n_below + self.n_beyond + self.n_without_centre
        return {"n_well": well, "n_mis": mis, "accuracy": well / (well + mis) if well + mis else None,
                "n_without_centre": self.n_without_centre}

    @property
    def max_rise(self) -> float:
        """The largest rise of accuracy from one plotted non-empty bin to the next (≤ 0 when the curve never
        rises; NaN with fewer than two such bins): how far the curve is from non-increasing."""
        acc = self.accuracy[self._used()]
        return float((acc[1:] - acc[:-1]).max()) if acc.numel() >= 2 else float("nan")

    def plotted_bins(self) -> dict[str, list]:
        """The plotted bins (centre < 1), JSON-ready: ``centres``, ``accuracy``, ``ci_low``, ``ci_high``
        (the 95% interval), ``n_well``, ``n_mis``; None for an empty bin's accuracy and interval."""
        keep = self.plotted.tolist()
        low, high = self.interval()

        def plotted(xs: list) -> list:
            return [None if isinstance(x, float) and math.isnan(x) else x for x, p in zip(xs, keep) if p]

        return {"centres": plotted(self.bin_centres.tolist()), "accuracy": plotted(self.accuracy.tolist()),
                "ci_low": plotted(low.tolist()), "ci_high": plotted(high.tolist()),
                "n_well": plotted(self.n_well.tolist()), "n_mis": plotted(self.n_mis.tolist())}

    def rows(self) -> list[dict[str, Any]]:
        """One dict per bin (the columns of :data:`CSV_COLUMNS`, accuracy and its 95% interval None when
        the bin is empty)."""
        e = self.bin_edges.tolist()
        low, high = (x.tolist() for x in self.interval())
        return [{"class": self.label, "bin": j, "left": e[j], "right": e[j + 1],
                 "centre": float(self.bin_centres[j]), "n_well": int(self.n_well[j]), "n_mis": int(self.n_mis[j]),
                 "accuracy": _nan_to_none(float(self.accuracy[j])), "plotted": bool(self.plotted[j]),
                 "ci_low": _nan_to_none(low[j]), "ci_high": _nan_to_none(high[j])}
                for j in range(self.bins)]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN written as null): options, normalization, bins, summary, per-class curves."""
        low, high = self.interval()
        return {
            "format": JSON_FORMAT, "label": self.label, "k": self.k, "dims": list(self.dims),
            "class_dims": self.class_dims, "centre": self.centre_mode,
            "classes_without_centre": list(self.classes_without_centre), "n_without_centre": self.n_without_centre,
            "n": self.n, "n_well_total": int(self.n_well.sum()),
            "n_mis_total": int(self.n_mis.sum()) + self.n_below + self.n_beyond + self.n_without_centre,
            "min_well": self.min_well, "scale": self.scale, "n_below": self.n_below, "n_beyond": self.n_beyond,
            "not_plotted": self.not_plotted(),
            "mean_accuracy": _nan_to_none(self.mean_accuracy), "slope": _nan_to_none(self.slope),
            "max_rise": _nan_to_none(self.max_rise),
            "bin_edges": self.bin_edges.tolist(), "bin_centres": self.bin_centres.tolist(),
            "accuracy": [_nan_to_none(a) for a in self.accuracy.tolist()],
            "ci_low": [_nan_to_none(a) for a in low.tolist()],
            "ci_high": [_nan_to_none(a) for a in high.tolist()],
            "n_well": self.n_well.tolist(), "n_mis": self.n_mis.tolist(), "plotted": self.plotted.tolist(),
            "skipped_classes": list(self.skipped_classes),
            "per_class": {str(c): r.to_json() for c, r in sorted(self.per_class.items())},
            # what the summary above leaves out, for read_json (NaN: a class without a centre, as null)
            "version": JSON_VERSION, "centre_values": _io.jsonable(self.centre.tolist()),
            "distance": self.distance.tolist(),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "accuracy curve") -> "CurveResult":
        """Rebuild a curve from :meth:`to_json` output (version 2 or later: with the centres and distances)."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "an accuracy curve", JSON_VERSION, _CURVE_HINT)
        if "distance" not in obj:
            raise ResultFileError(f"{source} was written by an older failatlas that kept the curve's bins only, "
                                  "not the per-sample distances and centres it is rebuilt from; compute the curve "
                                  "again (AccuracyCurve(ranking).compute(population), or failatlas analyze)")
        with _io.rebuilding(source, "accuracy curve", "compute it again"):
            def floats(key: str) -> torch.Tensor:  # null: NaN (an empty bin's accuracy, a class without centre)
                return torch.tensor(_null_to_nan(obj[key]), dtype=torch.float64)

            def ints(key: str) -> torch.Tensor:
                return torch.tensor([int(x) for x in obj[key]], dtype=torch.int64)

            k = int(obj["k"])
            mode = str(obj["centre"])
            edges, acc = floats("bin_edges"), floats("accuracy")
            result = cls(
                bin_edges=edges, bin_centres=floats("bin_centres"), accuracy=acc, n_well=ints("n_well"),
                n_mis=ints("n_mis"), plotted=torch.tensor([bool(x) for x in obj["plotted"]], dtype=torch.bool),
                k=k, dims=tuple(int(d) for d in obj["dims"]),
                centre=floats("centre_values"),  # Tensor[k], or [C, k] (nested lists) with class centres
                min_well=float(obj["min_well"]), scale=float(obj["scale"]), n_below=int(obj["n_below"]),
                n_beyond=int(obj["n_beyond"]), distance=floats("distance"),
                label=None if obj["label"] is None else int(obj["label"]),
                per_class={int(c): cls.from_json(r, f"{source}, class {c}") for c, r in obj["per_class"].items()},
                skipped_classes=tuple(int(c) for c in obj["skipped_classes"]), class_dims=str(obj["class_dims"]),
                centre_mode=mode, classes_without_centre=tuple(int(c) for c in obj["classes_without_centre"]),
                n_without_centre=int(obj["n_without_centre"]))
            bins = acc.shape[0]
            if edges.shape != (bins + 1,) or any(t.shape != (bins,) for t in (
                    result.bin_centres, result.n_well, result.n_mis, result.plotted)):
                raise ValueError(f"expected {bins + 1} bin edges and {bins} values of each bin")
            if result.n != int(obj["n"]) or len(result.dims) != k or result.centre.shape[-1:] != (k,):
                raise ValueError(f"expected {obj['n']} distances, {k} dimensions and centres of {k} values")
            return result

    @classmethod
    def read_json(cls, path: str | Path, classifier: str | None = None) -> "CurveResult":
        """A curve written by :meth:`to_json`, or one classifier's curve from the ``curves.json`` of
        ``failatlas analyze`` (``classifier``: its name; may be left out when the file holds one curve;
        :func:`read_curves` reads them all)."""
        obj = _io.read_result_json(path, (JSON_FORMAT, CURVES_FORMAT), "accuracy-curve file", "an accuracy curve",
                                   JSON_VERSION, _CURVE_HINT)
        source = f"accuracy-curve file {path}"
        one = obj["format"] == JSON_FORMAT
        name, entry = _io.classifier_entry(None if one else _classifiers(obj, source), classifier, source, "curves",
                                           ", or read them all with read_curves")
        return cls.from_json(obj, source) if one else cls.from_json(entry, f"{source}, classifier {name!r}")

    def to_csv(self, path: str | Path) -> Path:
        """One row per bin, the overall curve first (empty ``class``), then each class's; floats as
        ``repr``; an empty accuracy cell is an empty bin. Written atomically; returns the path."""
        lines = [",".join(CSV_COLUMNS)]
        for curve in [self] + [r for _, r in sorted(self.per_class.items())]:
            for row in curve.rows():
                lines.append(",".join("" if row[c] is None else repr(row[c]) if isinstance(row[c], float)
                                      else str(row[c]).lower() if isinstance(row[c], bool) else str(row[c])
                                      for c in CSV_COLUMNS))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path


def _null_to_nan(v: Any) -> Any:
    """The inverse of :func:`failatlas._io.jsonable` on (nested lists of) floats where null stands for NaN."""
    if isinstance(v, list):
        return [_null_to_nan(x) for x in v]
    return float("nan") if v is None else float(v)


def _classifiers(obj: dict[str, Any], source: str) -> dict[str, Any]:
    curves = obj.get("classifiers")
    if not isinstance(curves, dict) or not curves:
        raise ResultFileError(f"{source} is not a valid failatlas curves file (no curve under 'classifiers'); run "
                              "failatlas analyze again")
    return curves


def read_curves(path: str | Path) -> dict[str, CurveResult]:
    """Every classifier's curve in the ``curves.json`` of ``failatlas analyze``, ``{name: CurveResult}`` in
    the file's order (what :func:`failatlas.report.curves_figures.plot_accuracy_curves` takes)."""
    obj = _io.read_result_json(path, (CURVES_FORMAT,), "curves file", "the accuracy curves of an analyze run",
                               JSON_VERSION, "pass the curves.json of a `failatlas analyze` run (CurveResult.read_json "
                               "reads one curve)")
    source = f"curves file {path}"
    return {str(name): CurveResult.from_json(c, f"{source}, classifier {name!r}")
            for name, c in _classifiers(obj, source).items()}


def _resolve_k(k: int | str | None, style_dim: int) -> int:
    if k is None or k == "all":
        return style_dim
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= style_dim:
        raise FailatlasError(f"k must be a number of dimensions in [1, {style_dim}] or 'all', got {k!r}")
    return int(k)


def _curve(s: torch.Tensor, well: torch.Tensor, dims: torch.Tensor, bins: int, label: int | None,
           y: torch.Tensor | None = None) -> CurveResult:
    """The curve of one group of samples: s Tensor[n, S], well bool Tensor[n], dims int64 Tensor[k]; with
    labels ``y`` (Tensor[n]) each sample is measured from its own class's centre."""
    x = s[:, dims].to(torch.float64).numpy()
    w = well.numpy()
    no_centre: list[int] = []
    n_dropped = 0
    if y is None:
        centre = x[w].mean(axis=0) if w.any() else np.full(x.shape[1], np.nan)
        d = np.sqrt(((x - centre) ** 2).sum(axis=1))
    else:
        labels = y.numpy()
        centre = np.full((int(labels.max()) + 1 if len(labels) else 0, x.shape[1]), np.nan)
        d = np.full(len(x), np.nan)
        for c in np.unique(labels):
            m = labels == c
            if not (m & w).any():
                no_centre.append(int(c))
                continue
            centre[c] = x[m & w].mean(axis=0)
            d[m] = np.sqrt(((x[m] - centre[c]) ** 2).sum(axis=1))
        keep = ~np.isnan(d)
        n_dropped = int((~keep).sum())
        x, w, d = x[keep], w[keep], d[keep]
    n_well = int(w.sum())
    who = "the population" if label is None else f"class {label}"
    if n_well < 2:
        raise FailatlasError(f"{who} has {n_well} well-classified samples; the accuracy curve needs at least 2 "
                             "(use a larger --n)")
    d_well = d[w]
    min_well = float(d_well.min())
    scale = SCALE * float((d_well - min_well).max())
    if not scale > 0:
        raise FailatlasError(f"the well-classified samples of {who} all lie at the same distance from their "
                             "centre; the distance cannot be normalized (use a larger --n)")
    u = (d - min_well) / scale
    edges = np.histogram_bin_edges(u[w], bins=bins)
    h_well = np.histogram(u[w], bins=edges)[0]
    h_mis = np.histogram(u[~w], bins=edges)[0]
    total = h_well + h_mis
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(total > 0, h_well / np.maximum(total, 1), np.nan)
    centres = (edges[:-1] + edges[1:]) / 2
    u_mis = u[~w]
    return CurveResult(
        bin_edges=torch.from_numpy(edges), bin_centres=torch.from_numpy(centres), accuracy=torch.from_numpy(acc),
        n_well=torch.from_numpy(h_well.astype(np.int64)), n_mis=torch.from_numpy(h_mis.astype(np.int64)),
        plotted=torch.from_numpy(centres < 1), k=int(dims.numel()), dims=tuple(dims.tolist()),
        centre=torch.from_numpy(centre), min_well=min_well, scale=scale,
        n_below=int((u_mis < edges[0]).sum()), n_beyond=int((u_mis > edges[-1]).sum()),
        distance=torch.from_numpy(u), label=label, centre_mode="global" if y is None else "class",
        classes_without_centre=tuple(no_centre), n_without_centre=n_dropped)


class AccuracyCurve:
    """Accuracy vs normalized distance to the well-classified centre, on the top-K dimensions of a ranking.

    >>> result = AccuracyCurve(ranking, k=100).compute(population)
    >>> result.slope, result.per_class[3].accuracy

    ``population`` must be labelled by the classifier the ranking belongs to (see :func:`with_classifier`).
    k: 10, 50, 100, ... or ``None``/``"all"``; bins: number of bins (20 in the paper); per_class: also one
    curve per class present; class_dims: ``"global"`` (per-class curves on the global ranking's top-K) or
    ``"class"`` (on each class's own ranking, which needs ``rank(..., per_class=True)``); centre: ``"class"``
    (each sample from its own class's well-classified mean) or ``"global"`` (one mean for all classes), for
    the overall curve (a per-class curve always has its class's centre).
    """

    def __init__(self, ranking: Ranking, k: int | str | None = DEFAULT_K, bins: int = BINS, per_class: bool = True,
                 class_dims: str = "global", centre: str = "class") -> None:
        if not isinstance(ranking, Ranking):
            raise FailatlasError(f"AccuracyCurve takes a Ranking (from GradientRanking.rank), got {type(ranking).__name__}")
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise FailatlasError(f"bins must be a positive integer, got {bins!r}")
        if class_dims not in CLASS_DIMS:
            raise FailatlasError(f"class_dims must be one of {', '.join(CLASS_DIMS)}, got {class_dims!r}")
        if centre not in CENTRES:
            raise FailatlasError(f"centre must be one of {', '.join(CENTRES)}, got {centre!r}")
        if class_dims == "class" and per_class and not ranking.per_class:
            raise FailatlasError("class_dims='class' needs per-class rankings; rank with --per-class "
                                 "(GradientRanking.rank(population, per_class=True))")
        self.ranking = ranking
        self.k = _resolve_k(k, ranking.style_dim)
        self.bins = int(bins)
        self.per_class = bool(per_class)
        self.class_dims = class_dims
        self.centre = centre

    def compute(self, population: Population) -> CurveResult:
        if not isinstance(population, Population):
            raise FailatlasError(f"compute() takes a Population, got {type(population).__name__}")
        if population.style_dim != self.ranking.style_dim:
            raise FailatlasError(f"the population has {population.style_dim} style dimensions but the ranking has "
                                 f"{self.ranking.style_dim}; use a ranking of the same generator")
        dims = self.ranking.order[:self.k]
        overall = _curve(population.s, population.well, dims, self.bins, None,
                         population.y if self.centre == "class" else None)
        classes, skipped = {}, []
        if self.per_class:
            for c in sorted(set(population.y.tolist())):
                mask = population.y == c
                if self.class_dims == "class":
                    if c not in self.ranking.per_class:
                        skipped.append(c)
                        continue
                    cdims = self.ranking.per_class[c].order[:self.k]
                else:
                    cdims = dims
                try:
                    # one class's samples from that class's centre: "class", whatever the overall curve used
                    classes[c] = dataclasses.replace(
                        _curve(population.s[mask], population.well[mask], cdims, self.bins, c),
                        class_dims=self.class_dims, centre_mode="class")
                except FailatlasError:  # too few well-classified samples in this class
                    skipped.append(c)
        return dataclasses.replace(overall, per_class=classes, skipped_classes=tuple(skipped),
                                   class_dims=self.class_dims)


def accuracy_curve(population: Population, ranking: Ranking, k: int | str | None = DEFAULT_K, bins: int = BINS,
                   per_class: bool = True, class_dims: str = "global", centre: str = "class") -> CurveResult:
    """Functional form of :meth:`AccuracyCurve.compute`."""
    return AccuracyCurve(ranking, k=k, bins=bins, per_class=per_class, class_dims=class_dims,
                         centre=centre).compute(population)


def with_classifier(population: Population, G: nn.Module, classifier: nn.Module, batch_size: int | None = None,
                    progress_bar: bool | None = None) -> Population:
    """The same samples (z, y, w, s) labelled by another classifier.

    Images are synthesized from the stored s with 'const' noise (as :func:`sample_population` does) and
    classified through the adapter, under ``torch.no_grad`` in batches of ``batch_size``, models in eval
    mode (restored afterwards); logits, p_y, pred and well are recomputed. Returns a new Population.
    """
    if not isinstance(population, Population):
        raise FailatlasError(f"with_classifier takes a Population, got {type(population).__name__}")
    if population.style_dim != G.style_dim:
        raise FailatlasError(f"the population has {population.style_dim} style dimensions but the generator has "
                             f"{G.style_dim}; pass the generator that sampled it")
    check_class_counts(G, classifier)
    batch_size = check_batch_size(batch_size, G)
    dtype, device = _model_dtype_device(G)
    cdtype, cdevice = _model_dtype_device(classifier)
    parts = []
    with _eval_mode(G, classifier), torch.no_grad(), \
            progress(population.n, desc="re-classify", unit="img",
                     disable=None if progress_bar is None else not progress_bar) as bar:
        for start in range(0, population.n, batch_size):
            s = population.s[start:start + batch_size].to(device, dtype)
            logits = check_logits(
                classify(classifier, classifier_view(G.synthesis_from_styles(s, noise_mode="const")).to(cdevice, cdtype)),
                len(s), classifier, start)
            if start == 0:
                check_not_probabilities(logits, _who(classifier))
            parts.append(logits.float().cpu())
            bar.update(len(s))
    logits = torch.cat(parts)
    check_class_counts(G, classifier, found=int(logits.shape[1]))
    y = population.y
    p_y = torch.softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1).float()
    pred = logits.argmax(dim=1)
    return Population(z=population.z, y=y, w=population.w, s=population.s, logits=logits, p_y=p_y, pred=pred,
                      well=pred == y, seed=population.seed, classes=population.classes)


def classifier_curves(G: nn.Module, population: Population, classifiers: Mapping[str, tuple[nn.Module, Ranking]],
                      k: int | str | None = DEFAULT_K, bins: int = BINS, per_class: bool = True,
                      batch_size: int | None = None, progress_bar: bool | None = None,
                      centre: str = "class") -> dict[str, CurveResult]:
    """One curve per classifier on one generated population: ``{name: (classifier, its ranking)}`` →
    ``{name: CurveResult}``, each computed on the population re-labelled by that classifier."""
    return {name: accuracy_curve(with_classifier(population, G, clf, batch_size, progress_bar), ranking, k=k,
                                 bins=bins, per_class=per_class, centre=centre)
            for name, (clf, ranking) in classifiers.items()}
