"""How well each StyleSpace dimension separates well- from mis-classified samples (DESIGN §4.2, Fig. 4).

Per dimension k, over a population: histograms (``bins`` equal bins on common edges spanning the pooled
min..max of s_k) of s_k for the well- and the mis-classified samples, the two-sample Kolmogorov–Smirnov
statistic (the exact sup of the difference of the two empirical CDFs) and the AUROC of s_k as a score for
"mis-classified" (Mann–Whitney U / (n_mis · n_well), ties counted ½; 0.5 = no separation, 0 or 1 =
perfect). Everything is vectorized over dimensions with one sort per chunk of dimensions.

Two backends give the same bits: ``"native"`` computes the three statistics in one pass with the native op
:func:`failatlas.ops.dim_stats` (CPU and CUDA kernels; 3–4× faster than the torch code on the CPU,
``bench_ops`` in benchmarks/run.py), ``"reference"`` with the torch functions below. The default,
``"auto"``, is the native op when :mod:`failatlas._C` is built and the torch code otherwise; a chunk whose
edges are not finite (a NaN or infinite s) always takes the torch code.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import _ext, _io
from ..errors import FailatlasError
from ..models.stylegan2 import StyleDim
from .population import Population

BINS = 20
CSV_COLUMNS = ("dim", "layer", "resolution", "kind", "channel", "ks", "auroc", "mean_well", "mean_mis")
JSON_FORMAT = "failatlas-separation"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)


# --- per-dimension statistics (vectorized over columns) ----------------------------------------------


def _sorted_groups(values: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each column of values: Tensor[N, D]; return (sorted values, group flags in that order)."""
    vals, idx = values.sort(dim=0)
    return vals, group[idx]


def _tie_ends(vals: torch.Tensor) -> torch.Tensor:
    """bool Tensor[N, D]: True at the last position of each run of equal values in sorted columns."""
    end = torch.ones_like(vals, dtype=torch.bool)
    end[:-1] = vals[:-1] != vals[1:]
    return end


def ks_statistic(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Two-sample Kolmogorov–Smirnov statistic of every column.

    values: Tensor[N, D]; group: bool Tensor[N] (the two samples are group and ~group, both non-empty)
    → float64 Tensor[D] = sup_x |F_group(x) − F_other(x)|, exact: the ECDFs are compared after each run
    of tied values, in integer arithmetic.
    """
    n1 = int(group.sum())
    n0 = group.numel() - n1
    if n1 == 0 or n0 == 0:
        raise FailatlasError("the KS statistic needs two non-empty groups")
    vals, g = _sorted_groups(values, group)
    c1 = g.long().cumsum(dim=0)  # members of `group` at or below each position
    c0 = torch.arange(1, vals.shape[0] + 1).unsqueeze(1) - c1
    diff = (c1 * n0 - c0 * n1).abs() * _tie_ends(vals)  # n0·n1·|F1 − F0|, exact in int64
    return diff.max(dim=0).values.to(torch.float64) / (n0 * n1)


def auroc(values: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve of every column as a score for ``positive`` (rank-based Mann–Whitney).

    values: Tensor[N, D]; positive: bool Tensor[N] (both classes non-empty) → float64 Tensor[D],
    P(score of a positive > score of a negative) + ½ P(tie); equals sklearn's ``roc_auc_score``.
    """
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise FailatlasError("the AUROC needs both positive and negative samples")
    vals, pos = _sorted_groups(values, positive)
    N = vals.shape[0]
    index = torch.arange(N).unsqueeze(1).expand_as(vals)
    start = torch.ones_like(vals, dtype=torch.bool)
    start[1:] = vals[1:] != vals[:-1]
    first = torch.where(start, index, 0).cummax(dim=0).values  # first position of each tie run
    last = torch.where(_tie_ends(vals), index, N - 1).flip(0).cummin(dim=0).values.flip(0)  # its last position
    mid_rank = (first + last).to(torch.float64) / 2 + 1  # average 1-based rank of the run
    rank_sum = (mid_rank * pos).sum(dim=0)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _edges(x: torch.Tensor, bins: int) -> torch.Tensor:
    """float64 Tensor[D, bins+1]: equal bins from min to max of each row of x (float64 Tensor[D, N]),
    ±0.5 around a constant row, the last edge exactly the max (as ``np.histogram_bin_edges``)."""
    lo, hi = x.min(dim=1).values, x.max(dim=1).values
    flat = lo == hi
    lo, hi = torch.where(flat, lo - 0.5, lo), torch.where(flat, hi + 0.5, hi)
    steps = torch.arange(bins + 1, dtype=torch.float64, device=x.device) / bins
    edges = lo[:, None] + (hi - lo)[:, None] * steps
    edges[:, -1] = hi
    return edges


def histograms(values: torch.Tensor, group: torch.Tensor, bins: int = BINS
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-column histograms of the two groups on common edges.

    values: Tensor[N, D]; group: bool Tensor[N] → (edges float64 Tensor[D, bins+1] spanning the pooled
    min..max of each column (±0.5 when a column is constant, like numpy), counts of group int64
    Tensor[D, bins], counts of ~group). Bins are [e_j, e_{j+1}), the last one closed, as ``np.histogram``.
    """
    x = values.to(torch.float64).t().contiguous()  # [D, N]
    edges = _edges(x, bins)
    index = (torch.searchsorted(edges, x, right=True) - 1).clamp_(0, bins - 1)  # [D, N]
    counts = []
    for mask in (group, ~group):
        h = torch.zeros(x.shape[0], bins, dtype=torch.int64)
        h.scatter_add_(1, index[:, mask], torch.ones_like(index[:, mask]))
        counts.append(h)
    return edges, counts[0], counts[1]


KOLMOGOROV_MEAN = math.sqrt(math.pi / 2) * math.log(2)  # mean of the Kolmogorov distribution, 0.8687


def chance_ks(n1: int, n2: int) -> float:
    """The expected two-sample KS statistic of samples of sizes n1 and n2 drawn from one continuous
    distribution: the Kolmogorov distribution's mean over √n_e + 0.12 + 0.11/√n_e (Stephens' finite-sample
    scaling, n_e = n1·n2/(n1 + n2)). 0.0934 for 88 and 1,912 samples, 0.0434 for 412 and 9,588 (the
    mean over 400 simulated normal dimensions: 0.0938 and 0.0437); approximate for groups of a few samples
    (0.88 for 1 and 1, where the KS is always 1); NaN when a group is empty. A dimension's KS near it
    says nothing about that dimension."""
    if n1 <= 0 or n2 <= 0:
        return float("nan")
    root = math.sqrt(n1 * n2 / (n1 + n2))
    return KOLMOGOROV_MEAN / (root + 0.12 + 0.11 / root)


# --- result ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SeparationResult:
    """Separation of well- vs mis-classified samples along every dimension (CPU tensors, S dimensions).

    ks, auroc, mean_well, mean_mis: float64 Tensor[S] (AUROC of s_k as a score for mis-classified; means in
    raw style units); hist_well, hist_mis: int64 Tensor[S, bins]; edges: float64 Tensor[S, bins+1];
    layout: one :class:`StyleDim` per dimension, or None when unknown.
    """

    ks: torch.Tensor
    auroc: torch.Tensor
    hist_well: torch.Tensor
    hist_mis: torch.Tensor
    edges: torch.Tensor
    mean_well: torch.Tensor
    mean_mis: torch.Tensor
    n_well: int
    n_mis: int
    layout: tuple[StyleDim, ...] | None = None

    @property
    def style_dim(self) -> int:
        return int(self.ks.shape[0])

    @property
    def bins(self) -> int:
        return int(self.hist_well.shape[1])

    def _check_ranking(self, ranking) -> None:
        if ranking.style_dim != self.style_dim:
            raise FailatlasError(f"the ranking has {ranking.style_dim} dimensions but the separation has "
                                 f"{self.style_dim}; compute both from the same generator")

    def random_dims(self, exclude: Sequence[int], k: int, seed: int = 0) -> list[int]:
        """k dimensions drawn without replacement (seeded ``torch.Generator``) from those not in exclude."""
        excluded = set(int(d) for d in exclude)
        pool = torch.tensor([d for d in range(self.style_dim) if d not in excluded], dtype=torch.int64)
        gen = torch.Generator().manual_seed(int(seed))
        return pool[torch.randperm(len(pool), generator=gen)[:k]].tolist()

    def summary(self, ranking, k: int = 10, seed: int = 0) -> dict[str, Any]:
        """Mean KS of the top-k dimensions of ``ranking`` vs k random others (seeded), with three yardsticks:
        ``all_mean_ks`` (the mean over every dimension: what k random dimensions give on average, without
        the luck of one draw), ``best{k}_mean_ks`` (the k dimensions that separate best: the most any
        ranking's top k can reach on this population) and ``chance_mean_ks`` (:func:`chance_ks`: what a
        dimension that does not separate at all gives, from the group sizes alone).
        ``{"top{k}_mean_ks", "random{k}_mean_ks", "all_mean_ks", "best{k}_mean_ks", "chance_mean_ks",
        "top_dims", "random_dims", "best_dims", "n_well", "n_mis"}``."""
        self._check_ranking(ranking)
        top = ranking.order[:k].tolist()
        rnd = self.random_dims(top, k, seed)
        best = self.best_dims(k)
        mean = lambda dims: float(self.ks[dims].mean()) if dims else float("nan")  # noqa: E731
        return {f"top{k}_mean_ks": mean(top), f"random{k}_mean_ks": mean(rnd), "all_mean_ks": float(self.ks.mean()),
                f"best{k}_mean_ks": mean(best), "chance_mean_ks": chance_ks(self.n_well, self.n_mis),
                "top_dims": top, "random_dims": rnd, "best_dims": best,
                "n_well": self.n_well, "n_mis": self.n_mis}

    def best_dims(self, k: int = 10) -> list[int]:
        """The k dimensions with the largest KS statistic, largest first (ties: the lower index first)."""
        return torch.sort(self.ks, descending=True, stable=True).indices[:k].tolist()

    def dim_info(self, dim: int) -> dict[str, Any]:
        """Everything known about one dimension, JSON-ready (floats exact)."""
        d = self.layout[dim] if self.layout is not None else None
        return {
            "dim": int(dim), "layer": d.name if d else None, "resolution": d.resolution if d else None,
            "kind": d.kind if d else None, "channel": d.channel if d else None,
            "ks": float(self.ks[dim]), "auroc": float(self.auroc[dim]),
            "mean_well": float(self.mean_well[dim]), "mean_mis": float(self.mean_mis[dim]),
            "n_well": self.n_well, "n_mis": self.n_mis,
            "edges": self.edges[dim].tolist(), "hist_well": self.hist_well[dim].tolist(),
            "hist_mis": self.hist_mis[dim].tolist(),
        }

    def panels(self, ranking, k: int = 3, seed: int = 0, summary_k: int = 10) -> list[dict[str, Any]]:
        """The data of the Fig. 4 panels: the top-k dimensions of ``ranking`` (group "top"), then the first k
        of the random dimensions that :meth:`summary` (with ``summary_k`` and ``seed``) compares the top
        ``summary_k`` with (group "random"), so the figure shows dimensions the summary's mean includes."""
        self._check_ranking(ranking)
        top = ranking.order[:k].tolist()
        pool = max(int(summary_k), k)
        rnd = self.random_dims(ranking.order[:pool].tolist(), pool, seed)[:k]
        return ([{"group": "top", "rank": i + 1, **self.dim_info(d)} for i, d in enumerate(top)]
                + [{"group": "random", "rank": int(ranking.rank_of()[d]), **self.dim_info(d)} for d in rnd])

    def to_csv(self, path: str | Path) -> Path:
        """One row per dimension (columns :data:`CSV_COLUMNS`, floats as ``repr``), atomically."""
        lines = [",".join(CSV_COLUMNS)]
        for dim in range(self.style_dim):
            info = self.dim_info(dim)
            lines.append(",".join("" if info[c] is None else repr(info[c]) if isinstance(info[c], float)
                                  else str(info[c]) for c in CSV_COLUMNS))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: the group sizes, then every dimension's statistics, edges and histograms (what
        :meth:`read_json` rebuilds the result from)."""
        return {"format": JSON_FORMAT, "version": JSON_VERSION, "n_well": self.n_well, "n_mis": self.n_mis,
                "bins": self.bins,
                "dims": [{k: v for k, v in self.dim_info(d).items() if k not in ("n_well", "n_mis")}
                         for d in range(self.style_dim)]}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "separation result") -> "SeparationResult":
        """Rebuild a result from :meth:`to_json` output."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a separation result", JSON_VERSION, _HINT)
        with _io.rebuilding(source, "separation result", "compute it again"):
            rows = obj["dims"]
            S, bins = len(rows), int(obj["bins"])
            if [int(r["dim"]) for r in rows] != list(range(S)):
                raise ValueError(f"expected the dimensions 0 to {S - 1} in order")
            if any(len(r["edges"]) != bins + 1 or len(r["hist_well"]) != bins or len(r["hist_mis"]) != bins
                   for r in rows):
                raise ValueError(f"expected {bins + 1} edges and {bins} counts of each group for every dimension")
            col = lambda k: torch.tensor([float(r[k]) for r in rows], dtype=torch.float64)  # noqa: E731
            known = [r["layer"] is not None for r in rows]
            if any(known) and not all(known):
                raise ValueError("some dimensions name their layer and others do not")
            return cls(
                ks=col("ks"), auroc=col("auroc"),
                hist_well=torch.tensor([r["hist_well"] for r in rows], dtype=torch.int64).reshape(S, bins),
                hist_mis=torch.tensor([r["hist_mis"] for r in rows], dtype=torch.int64).reshape(S, bins),
                edges=torch.tensor([r["edges"] for r in rows], dtype=torch.float64).reshape(S, bins + 1),
                mean_well=col("mean_well"), mean_mis=col("mean_mis"), n_well=int(obj["n_well"]),
                n_mis=int(obj["n_mis"]),
                layout=tuple(StyleDim(str(r["layer"]), int(r["resolution"]), str(r["kind"]), int(r["channel"]),
                                      int(r["dim"])) for r in rows) if all(known) and rows else None)

    @classmethod
    def read_json(cls, path: str | Path) -> "SeparationResult":
        """A result written from :meth:`to_json`. (The ``separation.json`` of a run folder is the data of
        the separation figure, its six panels only: the result is recomputed exactly from the run's
        ``population.npz`` with :class:`Separation`.)"""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "separation file", "a separation result", JSON_VERSION,
                                   _HINT)
        return cls.from_json(obj, f"separation file {path}")


_HINT = ("pass a file written from SeparationResult.to_json(); a run folder's separation.json holds the figure's "
         "panels only: compute the result again from its population.npz, "
         "Separation(Population.from_npz(path), layout=...).compute()")


class Separation:
    """Separation of well- vs mis-classified samples along every StyleSpace dimension.

    >>> result = Separation(population, layout=G.style_layout()).compute()

    Raises :class:`FailatlasError` when the population lacks one of the two groups. ``chunk`` dimensions
    are sorted at a time (memory ≈ 40 bytes · N · chunk). ``backend``: ``"auto"`` (the native op
    :func:`failatlas.ops.dim_stats` when built, else the torch code), ``"native"`` or ``"reference"`` (the
    torch code); all give the same bits.
    """

    def __init__(self, population: Population, layout: Sequence[StyleDim] | None = None, bins: int = BINS,
                 chunk: int = 256, backend: str = "auto") -> None:
        if not isinstance(population, Population):
            raise FailatlasError(f"Separation takes a Population, got {type(population).__name__}")
        n, n_well = population.n, population.n_well
        if n_well == n:
            raise FailatlasError(f"all {n} samples are classified correctly; separation needs both groups — "
                                 "use a larger --n (or a weaker classifier)")
        if n_well == 0:
            some = population.classes
            why = (f"the classifier gets no sample of class{'es' if len(some) > 1 else ''} "
                   f"{', '.join(map(str, some))} right (--classes): add classes it recognizes, or check that the "
                   "generator draws these classes well (failatlas eval-gan shows its accuracy per class)"
                   if some is not None else
                   "check that the classifier was trained on the generator's classes and images")
            raise FailatlasError(f"all {n} samples are mis-classified; separation needs both groups — {why}")
        if layout is not None and len(layout) != population.style_dim:
            raise FailatlasError(f"the layout has {len(layout)} dimensions but the population has "
                                 f"{population.style_dim}; pass the layout of the generator that sampled it")
        if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or bins < 1:  # numpy integers too
            raise FailatlasError(f"bins must be a positive integer, got {bins!r}")
        self.population = population
        self.layout = None if layout is None else tuple(layout)
        self.bins = int(bins)
        self.chunk = max(1, int(chunk))
        self.backend = _check_backend(backend)

    def compute(self) -> SeparationResult:
        return separation(self.population.s, self.population.well, bins=self.bins, layout=self.layout,
                          chunk=self.chunk, backend=self.backend)


_BACKENDS = ("auto", "native", "reference")


def _check_backend(backend: str) -> str:
    if backend not in _BACKENDS:
        raise FailatlasError(f"the separation backend must be 'auto', 'native' (the dim_stats op) or 'reference' "
                             f"(torch code), got {backend!r}")
    return backend


def _native_chunk(x: torch.Tensor, mis: torch.Tensor, bins: int):
    """(ks, auroc, edges, hist_well, hist_mis) of one chunk from :func:`failatlas.ops.dim_stats`, or None when
    its edges are not finite (the op refuses them; the torch code then handles the chunk as before)."""
    from ..ops import dim_stats

    edges = _edges(x.to(torch.float64).t(), bins)
    if not bool((edges[:, :-1] <= edges[:, 1:]).all()):
        return None
    out = dim_stats(x, mis, edges)  # mask = mis: auroc of "mis-classified", hist_true = mis
    return out.ks, out.auroc, edges, out.hist_false, out.hist_true


def separation(s: torch.Tensor, well: torch.Tensor, bins: int = BINS, layout: Sequence[StyleDim] | None = None,
               chunk: int = 256, backend: str = "auto") -> SeparationResult:
    """Functional form of :meth:`Separation.compute`. s: Tensor[N, S]; well: bool Tensor[N]."""
    _check_backend(backend)
    native = backend == "native" or (backend == "auto" and _ext.available())
    if native:
        _ext.load()  # "native" without the built module: the FailatlasError that says how to build it
    if s.ndim != 2 or well.shape != (s.shape[0],) or well.dtype != torch.bool:
        raise FailatlasError(f"separation takes s [N, S] and a bool well [N], got {list(s.shape)} and "
                             f"{well.dtype} {list(well.shape)}")
    n_well = int(well.sum())
    n_mis = s.shape[0] - n_well
    if n_well == 0 or n_mis == 0:
        raise FailatlasError(f"separation needs well- and mis-classified samples, got {n_well} and {n_mis}; "
                             "use a larger --n")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("ks", "auroc", "edges", "hw", "hm")}
    mis = ~well
    for d0 in range(0, s.shape[1], chunk):
        x = s[:, d0:d0 + chunk]
        got = _native_chunk(x, mis, bins) if native else None
        if got is not None:
            ks, au, edges, hw, hm = got
        else:
            ks, au = ks_statistic(x, well), auroc(x, mis)
            edges, hw, hm = histograms(x, well, bins)
        parts["ks"].append(ks)
        parts["auroc"].append(au)
        parts["edges"].append(edges)
        parts["hw"].append(hw)
        parts["hm"].append(hm)
    s64 = s.to(torch.float64)
    return SeparationResult(
        ks=torch.cat(parts["ks"]), auroc=torch.cat(parts["auroc"]), hist_well=torch.cat(parts["hw"]),
        hist_mis=torch.cat(parts["hm"]), edges=torch.cat(parts["edges"]), mean_well=s64[well].mean(dim=0),
        mean_mis=s64[mis].mean(dim=0), n_well=n_well, n_mis=n_mis,
        layout=None if layout is None else tuple(layout))


WEAK_SEPARATION = 1.5  # top-k mean KS below this many times the mean over all dimensions: named in a note
FEW_SAMPLES = 30  # fewer well- or mis-classified samples than this: the separation figures are named as noise


def weak_separation(by_classifier: dict[str, Any], k: int = 10) -> list[str]:
    """A note per classifier whose top-k dimensions separate its mis-classified samples barely better than the
    average dimension (``summary.json`` → ``separation`` → ``by_classifier``): Fig. 4 then shows top
    dimensions that are not where its failures concentrate, and a reader should not take them for that. A
    classifier with fewer than ``FEW_SAMPLES`` mis-classified (or well-classified) samples gets instead a note
    that its separation figures rest on too few samples to say anything."""
    out = []
    for name, s in by_classifier.items():
        if not s:
            continue
        few = min((s["n_mis"], "mis-classified"), (s["n_well"], "well-classified"))
        if few[0] < FEW_SAMPLES:
            out.append(f"{name} has only {few[0]} {few[1]} sample{'s' if few[0] != 1 else ''}: its separation "
                       f"figures (KS, AUROC, top against random dimensions) rest on too few to say much (chance alone "
                       f"gives a mean KS of {s['chance_mean_ks']:.3f}); draw a larger population (--n)")
            continue
        if not s.get("all_mean_ks") or not s[f"top{k}_mean_ks"] < WEAK_SEPARATION * s["all_mean_ks"]:
            continue
        ld = s.get("latent_direction") or {}
        span = (f"; the styles span about {ld['style_effective_dims']:.0f} independent directions of "
                f"{ld['style_dims']:,} dimensions, so a factor behind the failures shows in most of them"
                if ld.get("style_effective_dims") else "")
        out.append(f"{name}'s top {k} dimensions separate its {s['n_mis']} mis-classified samples only "
                   f"{s[f'top{k}_mean_ks'] / s['all_mean_ks']:.2f} × as well as the average dimension (mean KS "
                   f"{s[f'top{k}_mean_ks']:.3f} against {s['all_mean_ks']:.3f}, and {s[f'random{k}_mean_ks']:.3f} "
                   f"for {k} random ones: {_ratio(s[f'top{k}_mean_ks'], s[f'random{k}_mean_ks'])}; the best {k} of all reach "
                   f"{s[f'best{k}_mean_ks']:.3f}, chance {s['chance_mean_ks']:.3f}): its failures differ from its "
                   f"successes a little along most dimensions rather than along a few{span}. Its top "
                   "dimensions are where p_y is most sensitive on average (the corner cases follow them), not where "
                   "its failures concentrate")
    return out


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f} ×" if b else "no ratio"
