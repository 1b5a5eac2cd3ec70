"""Compare classifiers on one generated population (issue 6 item 4): e.g. torch fp32 against its ONNX
int8 export, or the clean-trained against the corrupted-trained model.

* **agreement**: the fraction of samples on which two classifiers predict the same class (and each one's
  accuracy);
* **accuracy curves**: each classifier's Fig. 6 curve (its own ranking, K = 100) on one plot;
* **corner shifts side by side**: the same starts (for each class, the mean s of the samples that *every*
  classifier gets right) walked along the same dimensions in the same directions (the first classifier's
  top-10 and degrading directions), searched with each classifier: which directions fail earlier, and by
  how much (in σ).

Decision: one set of dimensions and directions for all (the first classifier's), so that each row
compares like with like; each classifier's own top dimensions are in its ranking, and its curve uses its
own ranking, as in ``failatlas analyze``.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .. import _io
from .._progress import Stages
from ..errors import FailatlasError, ResultFileError
from .corners import CornerCaseSearch
from .curves import AccuracyCurve, CurveResult, with_classifier
from .population import (Population, check_batch_size, check_class_counts, check_classes, describe_classes,
                         sample_population)
from .ranking import (BLACK_BOX_N, GradientRanking, Ranking, check_black_box_n, is_differentiable, rank_any,
                      ranking_agreement)


STAGES = ("population", "labels", "rankings", "curves", "corner cases")  # compare_classifiers'
REAL_STAGE = "real test images"  # run_compare's, after them
JSON_FORMAT = "failatlas-comparison"
#: version 2 added ``rankings`` and ``curve_results`` (each classifier's ranking and curve in full, what
#: :meth:`Comparison.read_json` rebuilds them from); files of version 1 (no ``version`` key) lack them
JSON_VERSION = 2
_JSON_HINT = "pass the compare.json of a `failatlas compare` run, or a file written from Comparison.to_json()"
COMPARE_FILES = ("compare.json", "corner_shifts.csv", "corner_shifts.png", "corner_shifts.json", "accuracy_curves.png",
                 "accuracy_curves.json", "report.html")


@dataclass(frozen=True, eq=False)
class Comparison:
    """names: the classifiers, first = reference; accuracy: name → accuracy on the population;
    agreement: name → name → fraction of equal predictions; dims/directions/sigmas: the walked
    dimensions (the first classifier's top-k); classes: the classes with a common start; shifts:
    name → [class][dim] corner shift in σ (None: not found within the search range); verified likewise;
    curves: name → its accuracy curve; rankings: name → its ranking; population_classes: the classes the
    population was drawn from (None: all); curve_dims: "reference" (every curve along the first
    classifier's top dimensions) or "own" (each along its own)."""

    names: tuple[str, ...]
    n: int
    seed: int
    accuracy: dict[str, float]
    agreement: dict[str, dict[str, float]]
    dims: tuple[int, ...]
    layers: tuple[str, ...]
    directions: tuple[int, ...]
    sigmas: tuple[float, ...]
    classes: tuple[int, ...]
    shifts: dict[str, list[list[float | None]]]
    verified: dict[str, list[list[bool]]]
    curves: dict[str, CurveResult] = field(default_factory=dict)
    rankings: dict[str, Ranking] = field(default_factory=dict)
    black_box_agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    population_classes: tuple[int, ...] | None = None
    curve_dims: str = "reference"
    classes_without_start: tuple[int, ...] = ()  # no sample every classifier gets right: no corner shifts
    no_curve: dict[str, str] = field(default_factory=dict)  # name → why it has no accuracy curve
    class_names: tuple[str, ...] | None = None  # names that say more than the indices (pipeline.class_names)

    def label(self, c: int) -> str:
        """``"6 (Shirt)"`` with class names, ``"6"`` without."""
        from ..report.figures import class_label

        return class_label(c, self.class_names)

    def labels(self, classes) -> str:
        return ", ".join(self.label(c) for c in classes)

    def shift_rows(self) -> list[dict[str, Any]]:
        """One row per (class, dimension): each classifier's shift, and which fails first (smallest shift)."""
        rows = []
        for i, c in enumerate(self.classes):
            for j, d in enumerate(self.dims):
                row: dict[str, Any] = {"class": c, "dim": d, "layer": self.layers[j], "direction": self.directions[j]}
                for name in self.names:
                    row[f"shift[{name}]"] = self.shifts[name][i][j]
                firsts = self.fail_first(i, j)
                row["fails_first"] = firsts[0] if len(firsts) == 1 else None  # a tie has no first
                row["tied"] = " ".join(firsts) if len(firsts) > 1 else ""  # the classifiers that tie for first
                ref = self.shifts[self.names[0]][i][j]
                for name in self.names[1:]:
                    v = self.shifts[name][i][j]
                    row[f"difference[{name}]"] = None if v is None or ref is None else v - ref
                rows.append(row)
        return rows

    def fail_first(self, i: int, j: int) -> list[str]:
        """The classifiers with the smallest shift for class index ``i`` and dimension index ``j`` (several
        when they tie; none when no classifier has a corner case there)."""
        found = {name: self.shifts[name][i][j] for name in self.names if self.shifts[name][i][j] is not None}
        least = min(found.values()) if found else None
        return [name for name, v in found.items() if v == least]

    def tie_groups(self) -> Counter:
        """``(names that tie for first, …)`` → how many (class, dimension) rows have that tie."""
        return Counter(tuple(f) for i in range(len(self.classes)) for j in range(len(self.dims))
                       if len(f := self.fail_first(i, j)) > 1)

    def mean_shift_by_dim(self) -> dict[str, list[float | None]]:
        """name → per dimension, the mean shift over the classes where every classifier found one, leaving
        out the classes whose start every classifier already gets wrong (all shifts 0: nothing compared)."""
        out: dict[str, list[float | None]] = {name: [] for name in self.names}
        for j in range(len(self.dims)):
            common = [i for i in range(len(self.classes))
                      if all(self.shifts[name][i][j] is not None for name in self.names)
                      and any(self.shifts[name][i][j] != 0 for name in self.names)]
            for name in self.names:
                vals = [self.shifts[name][i][j] for i in common]
                out[name].append(sum(vals) / len(vals) if vals else None)
        return out

    def failing_starts(self) -> dict[str, list[int]]:
        """name → the classes whose common start that classifier already gets wrong (p_y ≤ 0.5 at shift 0
        along every dimension)."""
        return {name: [c for i, c in enumerate(self.classes)
                       if self.shifts[name][i] and all(v == 0 for v in self.shifts[name][i])] for name in self.names}

    def notes(self) -> list[str]:
        """What the shift table does not say by itself: starts that already fail, and ties."""
        out = [f"{name} already gets the common start of class{'es' if len(cs) > 1 else ''} "
               f"{self.labels(cs)} wrong (p_y ≤ 0.5 at shift 0): those shifts are 0, and where every "
               "classifier is at 0 the class is left out of the mean shifts"
               for name, cs in self.failing_starts().items() if cs]
        if self.classes_without_start:
            cs = self.classes_without_start
            many = len(cs) > 1
            out.append(f"class{'es' if many else ''} {self.labels(cs)} left out of the corner shifts: "
                       f"no sample of {'each' if many else 'it'} is classified right by every classifier, so there "
                       f"is no common start (a larger --n, or a generator that draws the class{'es' if many else ''} "
                       "better)")
        out.extend(f"no accuracy curve for {name}: {why}" for name, why in self.no_curve.items())
        groups = self.tie_groups()
        if groups:  # a tie is for *first*: the others may fail later (a model and its exact export, int8 after)
            ties = sum(groups.values())
            which = ", ".join(f"{' = '.join(g)} in {k}" for g, k in groups.most_common())
            out.append(f"{ties} (class, dimension) row{'s have' if ties > 1 else ' has'} several classifiers failing "
                       f"first at the same shift ({which}): no one of them fails first there; any other classifier "
                       "fails later or not at all (the shift columns)")
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT, "names": list(self.names), "n": self.n, "seed": self.seed,
            "population_classes": None if self.population_classes is None else list(self.population_classes),
            "accuracy": self.accuracy, "agreement": self.agreement, "dims": list(self.dims),
            "layers": list(self.layers), "directions": list(self.directions), "sigmas": list(self.sigmas),
            "classes": list(self.classes), "shifts": self.shifts, "verified": self.verified,
            "mean_shift_by_dim": self.mean_shift_by_dim(),
            "curves": {name: {"mean_accuracy": _finite(c.mean_accuracy), "slope": _finite(c.slope),
                              "centre": c.centre_mode}
                       for name, c in self.curves.items()},
            "class_names": None if self.class_names is None else list(self.class_names),
            "curve_dims": self.curve_dims, "classes_without_start": list(self.classes_without_start),
            "no_curve": self.no_curve,
            "ranking_method": {name: r.method for name, r in self.rankings.items()},
            "black_box_agreement": self.black_box_agreement,
            # the nested results in full, for read_json (the summaries above are what a reader looks at)
            "version": JSON_VERSION, "rankings": {name: r.to_json() for name, r in self.rankings.items()},
            "curve_results": {name: c.to_json() for name, c in self.curves.items()},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "comparison") -> "Comparison":
        """Rebuild a comparison from :meth:`to_json` output (version 2 or later: with the rankings and curves);
        the keys ``failatlas compare`` adds to ``compare.json`` (models, real_accuracy, notes) are not part
        of it and are left out."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a comparison", JSON_VERSION, _JSON_HINT)
        if "rankings" not in obj or "curve_results" not in obj:
            raise ResultFileError(f"{source} was written by an older failatlas, before compare.json held each "
                                  "classifier's ranking and curve in full; run failatlas compare again")
        with _io.rebuilding(source, "comparison", "run failatlas compare again"):
            def table(rows: Any, cell) -> list[list]:
                return [[cell(v) for v in row] for row in rows]

            def shift(v: Any) -> Any:  # kept as written (an int 0 stays an int), so it is written the same
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise TypeError(f"a corner shift must be a number or null, got {v!r}")
                return v

            def flag(v: Any) -> bool:
                if not isinstance(v, bool):
                    raise TypeError(f"verified must be true or false, got {v!r}")
                return v

            def agreement(a: dict[str, Any]) -> dict[str, Any]:  # null: an undefined correlation (NaN)
                return {k: float("nan") if v is None and k in ("spearman", "sign_agreement") else v
                        for k, v in a.items()}

            names = tuple(str(n) for n in obj["names"])
            classes = obj["population_classes"]
            class_names = obj["class_names"]
            return cls(
                names=names, n=int(obj["n"]), seed=int(obj["seed"]),
                accuracy={str(k): float(v) for k, v in obj["accuracy"].items()},
                agreement={str(a): {str(b): float(v) for b, v in row.items()} for a, row in obj["agreement"].items()},
                dims=tuple(int(d) for d in obj["dims"]), layers=tuple(str(x) for x in obj["layers"]),
                directions=tuple(int(d) for d in obj["directions"]), sigmas=tuple(float(x) for x in obj["sigmas"]),
                classes=tuple(int(c) for c in obj["classes"]),
                shifts={str(k): table(v, shift) for k, v in obj["shifts"].items()},
                verified={str(k): table(v, flag) for k, v in obj["verified"].items()},
                curves={str(k): CurveResult.from_json(v, f"{source}, curve of {k!r}")
                        for k, v in obj["curve_results"].items()},
                rankings={str(k): Ranking.from_json(v, f"{source}, ranking of {k!r}")
                          for k, v in obj["rankings"].items()},
                black_box_agreement={str(k): agreement(v) for k, v in obj["black_box_agreement"].items()},
                population_classes=None if classes is None else tuple(int(c) for c in classes),
                curve_dims=str(obj["curve_dims"]),
                classes_without_start=tuple(int(c) for c in obj["classes_without_start"]),
                no_curve={str(k): str(v) for k, v in obj["no_curve"].items()},
                class_names=None if class_names is None else tuple(str(x) for x in class_names))

    @classmethod
    def read_json(cls, path: str | Path) -> "Comparison":
        """The comparison in the ``compare.json`` of ``failatlas compare`` (or a file written from
        :meth:`to_json`), with every classifier's ranking and accuracy curve."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "comparison file", "a comparison", JSON_VERSION,
                                   _JSON_HINT)
        return cls.from_json(obj, f"comparison file {path}")


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def compare_classifiers(G: nn.Module, classifiers: Mapping[str, nn.Module], *, n: int = 2000, seed: int = 0,
                        k: int = 10, curve_k: int = 100, batch_size: int | None = None,
                        population: Population | None = None, black_box_n: int = BLACK_BOX_N,
                        classes: Sequence[int] | None = None, curve_dims: str = "reference",
                        progress_bar: bool | None = None, distributed: bool = False,
                        verbose: bool = False, then: Sequence[str] = ()) -> Comparison | None:
    """Compare ``{name: classifier}`` (at least two; the first is the reference) on one population of
    ``n`` samples drawn with ``seed`` from ``classes`` (None: all), or on the given ``population`` (whoever
    labelled it, it is labelled again by the first classifier: its verdicts are the reference).

    curve_dims: the dimensions each accuracy curve measures distance along: ``"reference"`` (default: the
    first classifier's top ``curve_k`` for every curve, as the corner shifts use its top ``k``, so two
    curves differ only by the models: an ONNX or int8 export, ranked by finite differences on
    ``black_box_n`` samples, is otherwise drawn along a noisier estimate of its dimensions) or ``"own"``
    (each classifier's own ranking, as ``analyze`` and DESIGN §4.6 do).

    distributed: under ``torchrun`` (after :func:`failatlas.distributed.init`), what is computed per
    sample is sharded across the ranks: the population and its re-labelling by every other classifier
    (blocks of whole batches, all-gathered), every classifier's ranking (gradients; a black-box ranking's
    dimensions) and the gradient ranking the black-box agreement is measured against. Rank 0 alone then
    computes the curves and the corner searches and returns the :class:`Comparison`; the other ranks
    return None after the last collective. The result equals one process's. Without an initialized
    process group it changes nothing.

    verbose: each stage announced on stderr (``failatlas compare: [3/5] rankings …``), on a terminal or
    not (``run_compare``, the CLI's job, turns it on); then: the stages the caller runs after these (counted
    in the numbers shown: ``run_compare`` adds its "real test images"); progress_bar: tqdm bars (None: only on
    a terminal)."""
    names = tuple(classifiers)
    if len(names) < 2:
        raise FailatlasError(f"compare needs at least two classifiers, got {len(names)}; pass --classifier twice")
    _check_k(k, G.style_dim)
    _check_k(curve_k, G.style_dim, "curve_k")
    _check_curve_dims(curve_dims)
    classes = check_classes(classes)
    if population is not None and classes is not None:
        raise FailatlasError("pass classes or a population, not both: a given population keeps the classes it "
                             "was drawn from (sample it with classes=...)")
    black_box_n = check_black_box_n(black_box_n)
    for name, C in classifiers.items():
        check_class_counts(G, C, name=name)
    if distributed:
        from .. import distributed as dist

        distributed = dist.sharding()
    stage = Stages("compare", (*STAGES, *then), verbose)
    first = classifiers[names[0]]
    with stage("population", f"{population.n} samples given, labelled by {names[0]}" if population is not None
               else f"{n} samples, seed {seed}{describe_classes(classes)}, labelled by {names[0]}"):
        if population is not None:  # whoever labelled it: the reference's verdicts are what is compared
            pop0 = with_classifier(population, G, first, batch_size=batch_size, progress_bar=progress_bar)
        else:
            pop0 = sample_population(G, first, n, seed=seed, classes=classes, batch_size=batch_size,
                                     progress_bar=progress_bar, distributed=distributed)
    pops = {names[0]: pop0}
    with stage("labels", f"{len(names) - 1} other classifier(s)"):
        for name in names[1:]:
            if distributed:
                from .pipeline import _relabel

                pops[name] = _relabel(pop0, G, classifiers[name], batch_size, progress_bar, sharded=True)
            else:
                pops[name] = with_classifier(pop0, G, classifiers[name], batch_size=batch_size,
                                             progress_bar=progress_bar)
    accuracy = {name: float(p.well.double().mean()) for name, p in pops.items()}
    agreement = {a: {b: float((pops[a].pred == pops[b].pred).double().mean()) for b in names} for a in names}

    # (sharded: rank 0 gets every ranking, the other ranks None; every rank makes the same collective calls)
    with stage("rankings", f"{len(names)} classifier(s)"):
        rankings = {name: rank_any(G, classifiers[name], pops[name], seed=seed, batch_size=batch_size,
                                   black_box_n=black_box_n, progress_bar=progress_bar, distributed=distributed)
                    for name in names}
        # A black-box ranking (finite differences on its first n samples) against the reference's gradient
        # ranking on the population: for an export of the reference, this measures the black-box method.
        black_box_agreement = {}
        if is_differentiable(first):
            for name in names[1:]:
                if not is_differentiable(classifiers[name]):  # its ranking is the black-box one
                    n_bb = min(black_box_n, pop0.n)
                    sub = pop0.subset(torch.arange(n_bb))
                    grad = GradientRanking(G, first, batch_size=batch_size, progress_bar=False).rank(
                        sub, distributed=distributed)
                    if grad is None:  # not rank 0
                        continue
                    r = rankings[name]
                    grad = _with_sigma(grad, r.sigma)
                    black_box_agreement[name] = {"reference": names[0], "n": r.n,
                                                 **ranking_agreement(grad, r)}
    if distributed and not dist.is_main():  # the last collective is done: rank 0 does the rest
        return None
    curves, no_curve = {}, {}
    along_what = f"the dimensions of {names[0]}" if curve_dims == "reference" else "each one's own dimensions"
    with stage("curves", f"K = {curve_k}, along {along_what}"):
        for name in names:
            along = rankings[names[0]] if curve_dims == "reference" else rankings[name]
            try:
                curves[name] = AccuracyCurve(along, k=curve_k, per_class=False).compute(pops[name])
            except FailatlasError as exc:  # e.g. fewer than two well-classified samples: no curve for this one
                no_curve[name] = str(exc)

    ref = rankings[names[0]]
    dims = [int(d) for d in ref.order[:k]]
    well_all = torch.stack([p.well for p in pops.values()]).all(dim=0)
    classes, starts, no_start = [], [], []
    for c in (range(G.num_classes) if pop0.classes is None else pop0.classes):
        mask = (pop0.y == c) & well_all
        if bool(mask.any()):
            classes.append(c)
            starts.append(pop0.s[mask].to(torch.float64).mean(dim=0).to(pop0.s.dtype))
        else:
            no_start.append(int(c))
    if not classes:
        raise FailatlasError("no sample is classified correctly by every classifier, so there is no common start "
                             "for the corner search; use a larger --n")
    s0, labels = torch.stack(starts), torch.tensor(classes, dtype=torch.long)
    shifts, verified = {}, {}
    with stage("corner cases", f"{len(classes)} classes × top {len(dims)} dims of {names[0]}"):
        for name in names:
            cc = CornerCaseSearch(G, classifiers[name], ref, batch_size=batch_size,
                                  progress_bar=progress_bar).search(starts=s0, labels=labels, dims=dims, pairs=False)
            shifts[name] = [[None] * len(dims) for _ in classes]
            verified[name] = [[False] * len(dims) for _ in classes]
            for row in cc.cases:
                j = dims.index(row.dims[0])
                shifts[name][row.start][j] = row.shift
                verified[name][row.start][j] = bool(row.verified)
    layout = ref.layout
    directions = [int(ref.direction[d]) or 1 for d in dims]
    return Comparison(names=names, n=pop0.n, seed=seed, accuracy=accuracy, agreement=agreement, dims=tuple(dims),
                      layers=tuple(layout[d].name for d in dims), directions=tuple(directions),
                      sigmas=tuple(float(ref.sigma[d]) for d in dims), classes=tuple(classes), shifts=shifts,
                      verified=verified, curves=curves, rankings=rankings,
                      black_box_agreement=black_box_agreement, population_classes=pop0.classes,
                      curve_dims=curve_dims, classes_without_start=tuple(no_start), no_curve=no_curve)


def _check_k(k: Any, style_dim: int, what: str = "--k") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= style_dim:
        raise FailatlasError(f"{what} must be a number of dimensions between 1 and the generator's {style_dim}, "
                             f"got {k!r}")
    return int(k)


def _with_sigma(ranking: Ranking, sigma: torch.Tensor) -> Ranking:
    """The ranking re-scored with another σ (the whole population's, as the black-box ranking uses)."""
    import dataclasses

    from .ranking import _order

    score = -sigma * ranking.mean_grad
    return dataclasses.replace(ranking, score=score, sigma=sigma, order=_order(score),
                               direction=torch.sign(score).to(torch.int64))


# --- files ---------------------------------------------------------------------------------------------


def _csv(rows: Sequence[dict[str, Any]]) -> bytes:
    if not rows:
        return b""
    cols = list(rows[0])

    def cell(v: Any) -> str:
        return "" if v is None else repr(v) if isinstance(v, float) else str(v)

    lines = [",".join(cols)] + [",".join(cell(r[c]) for c in cols) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def plot_shift_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Grouped bars: per walked dimension (labelled with the sign of the direction walked), each classifier's
    mean corner shift (classes where all found one). Writes ``path`` and its ``.json`` twin."""
    from ..report.figures import _new_figure, _save_png

    path = Path(path)
    means = comparison.mean_shift_by_dim()
    K, names = len(comparison.dims), comparison.names
    fig = _new_figure(max(5.0, 0.7 * K + 1.5), 3.4)
    ax = fig.subplots()
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(K)]
        ys = [v if v is not None else 0.0 for v in means[name]]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks(range(K))
    ax.set_xticklabels([f"{d} ({'+' if s > 0 else '−'})\n{layer}"
                        for d, s, layer in zip(comparison.dims, comparison.directions, comparison.layers)], fontsize=6)
    ax.set_ylabel("mean corner shift (σ, along the sign shown)", fontsize=8)
    ax.set_title("where each classifier fails: smaller = earlier", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save_png(fig, path)
    _io.write_json(path.with_suffix(".json"), {"dims": list(comparison.dims), "layers": list(comparison.layers),
                                               "directions": list(comparison.directions), "mean_shift_by_dim": means,
                                               "note": "bars at 0 mark dims with no common corner case"})
    return path


def _report(comparison: Comparison, folder: Path, real: dict[str, Any] | None = None,
            notes: Sequence[str] = (), models: dict[str, Any] | None = None) -> str:
    from ..report.html import _e, _img, _num, _table

    names = comparison.names
    real_rows = (real or {}).get("classifiers", {})
    real_head = [f"real {real['dataset']} test, clean / corrupted"] if real else []
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>failatlas compare</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 6px;"
             "text-align:right}.l{text-align:left}table{border-collapse:collapse}</style></head><body>",
             f"<h1>Comparison of {len(names)} classifiers</h1>",
             f"<p>One population of {comparison.n} samples (seed {comparison.seed}"
             + ("" if comparison.population_classes is None else
                f"; classes {comparison.labels(comparison.population_classes)}") + "), labelled by each.</p>",
             *(["<h2>Models</h2>", _table(["model", "path", "sha256 (first 16 hex digits)"],
                                          [[m["name"], m["path"], "; ".join(f"{f} {h[:16]}" for f, h in
                                                                           m["sha256"].items())]
                                           for m in [{**models["generator"], "name": "generator"},
                                                     *models["classifiers"]]], left=[0, 1, 2])]
               if models else []),
             "<h2>Accuracy and agreement</h2>",
             _table(["classifier", "accuracy", *[f"agrees with {b}" for b in names], *real_head],
                    [[a, _num(comparison.accuracy[a])] + [_num(comparison.agreement[a][b]) for b in names]
                     + ([f"{real_rows[a]['clean']:.4f} / {real_rows[a]['corrupted']:.4f}"] if real else [])
                     for a in names], left=[0])]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    if comparison.curves:  # written by this run (not a figure left in the folder by an earlier one)
        k = next(iter(comparison.curves.values())).k
        along = (f"every curve along the top {k} dimensions of {names[0]}'s ranking, so that curves differ only by "
                 "the models" if comparison.curve_dims == "reference" else
                 f"each curve along the top {k} dimensions of its own classifier's ranking")
        how = "; ".join(f"{n}: {m}" for n, m in ((n, comparison.rankings[n].method) for n in names)
                        if n in comparison.rankings)
        bb = "".join(f" The black-box ranking of {_e(n)} shares {a['top_overlap']} of its top {a['k']} with the "
                     f"gradient ranking of {_e(a['reference'])} on the same {a['n']} samples."
                     for n, a in comparison.black_box_agreement.items() if "top_overlap" in a)
        parts += [f"<h2>Accuracy against distance (K = {k})</h2>",
                  f"<p>Distance {_e(along)} (--curve-dims). Rankings: {_e(how)}.{bb}</p>",
                  _img(folder / "accuracy_curves.png", "curves")]
    parts += ["<h2>Corner shifts side by side</h2>",
              f"<p>Dimensions and directions: the top {len(comparison.dims)} of {_e(names[0])}; starts: per class, "
              "the mean of the samples every classifier gets right.</p>",
              _img(folder / "corner_shifts.png", "corner shifts")]
    rows = comparison.shift_rows()
    head = ["class", "dim", "layer"] + [f"shift {n}" for n in names] + ["fails first"]
    parts.append(_table(head, [[comparison.label(r["class"]), r["dim"], r["layer"],
                                *[_num(r[f"shift[{n}]"]) for n in names],
                                _first_cell(comparison, r)] for r in rows], left=[2]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _first_cell(comparison: Comparison, row: dict[str, Any]) -> str:
    """The report's "fails first" cell: the classifier, the ones that tie for first ("a = b"), or "–"."""
    if row["fails_first"]:
        return row["fails_first"]
    firsts = comparison.fail_first(comparison.classes.index(row["class"]), comparison.dims.index(row["dim"]))
    return " = ".join(firsts) if firsts else "–"


@dataclass(frozen=True)
class CompareRun:
    """What :func:`run_compare` computed and wrote. Under torchrun, ranks other than 0 get ``comparison``
    None and no files (rank 0 writes them)."""

    out: Path
    comparison: Comparison | None
    files: dict[str, Path]
    rank: int = 0
    world_size: int = 1
    real_accuracy: dict[str, Any] | None = None  # each classifier on the real test split (pipeline.real_accuracy)
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """A short text summary: accuracy, agreement with the reference, mean corner shift, and the files."""
        if self.comparison is None:
            return f"rank {self.rank} of {self.world_size}: shard done; rank 0 writes the results to {self.out}"
        c = self.comparison
        ref = c.names[0]
        means = c.mean_shift_by_dim()
        rows = c.shift_rows()
        first = {name: sum(r["fails_first"] == name for r in rows) for name in c.names}
        lines = [f"{'classifier':<28} {'accuracy':>8} {'agrees':>7} {'mean shift (σ)':>15} {'fails first':>11}"]
        for name in c.names:
            vals = [v for v in means[name] if v is not None]
            mean = f"{sum(vals) / len(vals):.2f}" if vals else "–"
            lines.append(f"{name:<28} {c.accuracy[name]:>8.4f} {c.agreement[ref][name]:>7.4f} {mean:>15} "
                         f"{first[name]:>11}")
        lines.append(f"(fails first: of the {len(rows)} (class, dimension) rows, those where it alone has the smallest "
                     "corner shift; the mean shift averages over rows where every classifier has one)")
        lines.extend(f"black-box ranking of {name}: {a['top_overlap']} of its top {a['k']} in the gradient ranking "
                     f"of {a['reference']} on the same {a['n']} samples"
                     for name, a in c.black_box_agreement.items() if "top_overlap" in a)
        if self.real_accuracy:
            lines.append(f"real {self.real_accuracy['dataset']} test images (clean / corrupted): " + ", ".join(
                f"{name} {r['clean']:.4f} / {r['corrupted']:.4f}"
                for name, r in self.real_accuracy["classifiers"].items()))
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"corner shifts over {len(c.classes)} class{'' if len(c.classes) == 1 else 'es'} × "
                     f"{len(c.dims)} dims of {ref}; "
                     f"report: {self.files['report']}")
        return "\n".join(lines)


CURVE_DIMS = ("reference", "own")


def _check_curve_dims(curve_dims: str) -> None:
    if curve_dims not in CURVE_DIMS:
        raise FailatlasError(f"--curve-dims must be 'reference' (every curve along the first classifier's top "
                             f"dimensions) or 'own' (each classifier's own), got {curve_dims!r}")


def run_compare(generator: str | Path, classifiers: Sequence[str | Path], *, out: str | Path, n: int = 2000,
                seed: int = 0, k: int = 10, batch_size: int | None = None, black_box_n: int = BLACK_BOX_N,
                classes: Sequence[int] | None = None, curve_dims: str = "reference",
                progress_bar: bool | None = None, verbose: bool = True) -> CompareRun:
    """The ``failatlas compare`` job: load the generator and the classifiers (folders, shipped names or
    ``.onnx``, ``.pt`` or ``.pt2`` files), compare them (each stage announced on stderr unless ``verbose`` is False) and write
    ``compare.json``, ``corner_shifts.csv``,
    ``corner_shifts.png`` (+ ``.json``), ``accuracy_curves.png`` (+ ``.json``) and a self-contained
    ``report.html`` into ``out``.

    Under ``torchrun`` (WORLD_SIZE > 1) the per-sample work is sharded across the ranks (see
    :func:`compare_classifiers`, gloo on CPU); rank 0 alone computes the rest, writes the files and gets
    the full result; the other ranks return with ``comparison`` None."""
    from .. import _provenance
    from .._paths import resolve_classifier, resolve_model
    from ..deploy import load_any_classifier
    from ..models.stylegan2 import load_generator
    from ..report.curves_figures import plot_accuracy_curves
    from .pipeline import _unique_names, command_line, generator_info, model_info, real_accuracy

    from .. import distributed as dist
    from .population import _model_dtype_device

    classes = check_classes(classes)
    _check_curve_dims(curve_dims)
    out = _io.check_out_folder(out, names=COMPARE_FILES)
    rank, world_size = dist.world()
    if rank != 0:
        progress_bar, verbose = False, False
    gpath = resolve_model(generator)
    G = load_generator(gpath)
    _check_k(k, G.style_dim)  # before the classifiers are loaded and anything runs
    black_box_n = check_black_box_n(black_box_n)
    paths = [resolve_classifier(c) for c in classifiers]
    models = {name: load_any_classifier(c) for name, c in zip(_unique_names(paths), classifiers)}
    # which files were compared, for the record (two exports can share a file name: classifier.pt, -2)
    ginfo = generator_info(generator, gpath)
    cinfos = [model_info(given, path, name) for given, path, name in zip(classifiers, paths, models)]
    infos = {"generator": ginfo.to_json(), "classifiers": [info.to_json() for info in cinfos]}
    command = command_line("compare", ginfo, cinfos, [
        "--n", n, *(["--classes", *classes] if classes is not None else []), "--seed", seed, "--k", k,
        "--curve-dims", curve_dims, "--black-box-n", black_box_n, "--batch-size", check_batch_size(batch_size, G)],
        out)
    if world_size > 1:  # every rank checks the same things, so they all fail or all get to init()
        if len(models) < 2:
            raise FailatlasError(f"compare needs at least two classifiers, got {len(models)}; pass --classifier "
                                 "twice")
        if _model_dtype_device(G)[1].type != "cpu":
            raise FailatlasError("failatlas under torchrun runs on the CPU (gloo) only for now")
        dist.init()
    started = time.perf_counter()  # compare_classifiers' stages count their elapsed time from about here
    comparison = compare_classifiers(G, models, n=n, seed=seed, k=k, batch_size=batch_size, black_box_n=black_box_n,
                                     classes=classes, curve_dims=curve_dims, progress_bar=progress_bar,
                                     distributed=world_size > 1, verbose=verbose, then=(REAL_STAGE,))
    if comparison is None:  # not rank 0 under torchrun: its shards are done, rank 0 writes
        return CompareRun(out, None, {}, rank=rank, world_size=world_size)
    from .._paths import recorded_data
    from .pipeline import class_names

    data = recorded_data(gpath)  # the first classifier's class names, else those of the generator's data
    comparison = replace(comparison, class_names=class_names(
        next(iter(models.values())), dataset=None if data is None else data["dataset"]))

    # seconds on MNIST-10k's 2,000 test images, about a minute on Fashion-MNIST's 10,000: announced
    with Stages("compare", (*STAGES, REAL_STAGE), verbose, start=started)(
            REAL_STAGE, f"{len(models)} classifiers, clean and corrupted"):
        real, notes = real_accuracy(gpath, models, comparison.population_classes)
    notes = [*notes, *comparison.notes()]
    out.mkdir(parents=True, exist_ok=True)
    # every file is written into a staging folder inside --out and moved into place at the end, so a
    # failure part-way leaves the folder as it was, not a mix of this run's files and an earlier run's
    # (one left by a killed compare is removed here; a running one's is left)
    stage = _io.make_temp(out, ".compare-")
    try:
        _io.write_bytes(stage / "corner_shifts.csv", _csv(comparison.shift_rows()))
        plot_shift_comparison(comparison, stage / "corner_shifts.png")
        if comparison.curves:
            plot_accuracy_curves(comparison.curves, stage / "accuracy_curves.png")
        _io.write_bytes(stage / "report.html", _report(comparison, stage, real, notes, infos).encode("utf-8"))
        _io.write_json(stage / "compare.json", _io.jsonable({
            **comparison.to_json(), "models": infos, "command": command, "real_accuracy": real, "notes": notes,
            "versions": _provenance.versions(),
            # what else the command was given (batch size: the one used)
            "options": {"k": k, "black_box_n": black_box_n, "batch_size": check_batch_size(batch_size, G)},
            "file_sha256": _io.folder_sha256(stage)}))  # the run's other files, for failatlas verify
        with _io.signals_held():  # a Ctrl-C or kill waits until this run's files are all in place
            if not comparison.curves:  # no curve this time: an earlier run's figure must not pass for this one's
                for name in ("accuracy_curves.png", "accuracy_curves.json"):
                    (out / name).unlink(missing_ok=True)
            for written in sorted(stage.iterdir()):
                os.replace(written, out / written.name)
            shutil.rmtree(stage, ignore_errors=True)  # inside: a held SIGTERM ends the process when it ends
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    files = {"json": out / "compare.json", "csv": out / "corner_shifts.csv", "shifts_png": out / "corner_shifts.png",
             "report": out / "report.html"}
    if comparison.curves:
        files["curves_png"] = out / "accuracy_curves.png"
    return CompareRun(out, comparison, files, real_accuracy=real, notes=tuple(notes))
