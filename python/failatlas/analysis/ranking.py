"""Rank StyleSpace dimensions by how much they lower the classifier's confidence (DESIGN §4.1).

For every sample i of a population, g_i = ∂t_i/∂s_i with t_i = p_{y_i} (softmax probability of the
conditioning label) or the logit of y_i. With both models in eval mode the samples of a batch are
independent, so one backward of Σ_i t_i gives every per-sample gradient at once. Then, per dimension k,

    σ_k = std of s_k over the population (unbiased, raw StyleSpace units),
    score_k = −σ_k · mean_i g_ik      (units of t: the first-order change of t for a shift of −1 σ_k),

dimensions are ranked by |score_k| (descending, ties by dimension index), and ``direction_k =
sign(score_k)`` is the degrading direction: moving s_k by +direction_k · σ_k lowers t to first order by
about |score_k|. Shifts elsewhere in failatlas are in these σ units.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import _io
from .._progress import progress
from .._seeding import check_seed
from ..errors import FailatlasError
from ..models.adapter import classifier_view
from ..models.stylegan2 import StyleDim
from .population import (Population, _eval_mode, _model_dtype_device, check_batch_size, check_class_counts,
                         check_classes, check_population_size, describe_classes)

TARGETS = ("probability", "logit")
CSV_COLUMNS = ("rank", "dim", "layer", "resolution", "kind", "channel", "score", "abs_score", "direction",
               "sigma", "mean_grad", "ci_low", "ci_high")
JSON_FORMAT = "failatlas-ranking"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)
RANK_FILES = ("ranking.csv", "ranking.json", "population.npz", "separation.csv", "separation.json", "separation.png")


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise FailatlasError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return target


def style_gradients(G: nn.Module, classifier: nn.Module, s: torch.Tensor, y: torch.Tensor,
                    target: str = "probability") -> torch.Tensor:
    """Per-sample gradients ∂t_i/∂s_i, t_i = p_{y_i} (``"probability"``) or logit_{y_i} (``"logit"``).

    s: Tensor[N, S] (cast to the generator's dtype and device), y: int Tensor[N] → Tensor[N, S] in the
    generator's dtype, on its device. The models must be in eval mode (then the samples are independent
    and one backward of Σ_i t_i yields every g_i); 'const' noise.
    """
    _check_target(target)
    for m in (G, classifier):
        if any(sub.training for sub in m.modules()):
            raise FailatlasError("style_gradients needs both models in eval mode (call .eval()): in training "
                                 "mode batch statistics couple the samples and the per-sample gradients are wrong")
    dtype, device = _model_dtype_device(G)
    cdtype, cdevice = _model_dtype_device(classifier)
    s = s.detach().to(device, dtype).requires_grad_(True)
    y = y.to(cdevice).long()
    with torch.enable_grad():
        logits = classifier(classifier_view(G.synthesis_from_styles(s, noise_mode="const")).to(cdevice, cdtype))
        if target == "probability":
            t = torch.softmax(logits, dim=1).gather(1, y[:, None])
        else:
            t = logits.gather(1, y[:, None])
        (g,) = torch.autograd.grad(t.sum(), s)
    return g


@dataclass(frozen=True)
class RankedDim:
    """One row of a ranking (one dimension), as written to ``ranking.csv``."""

    rank: int  # 1 = most influential
    dim: int  # index in s
    layer: str
    resolution: int
    kind: str
    channel: int
    score: float
    abs_score: float
    direction: int  # +1 or -1 (0: no gradient signal); shifting s by +direction·σ lowers p_y
    sigma: float  # std of s_dim over the population (raw style units)
    mean_grad: float  # mean ∂t/∂s_dim (per raw style unit)
    ci_low: float | None = None
    ci_high: float | None = None


@dataclass(frozen=True, eq=False)
class Ranking:
    """The result of :meth:`GradientRanking.rank` (CPU tensors; statistics in float64).

    order: int64 Tensor[S], dimensions best first; score, sigma, mean_grad: Tensor[S] indexed by dimension
    (not by rank); direction: int64 Tensor[S] in {−1, 0, +1}; layout: one :class:`StyleDim` per dimension;
    ci_low/ci_high: Tensor[S], the 95% bootstrap percentile interval of the score (None without bootstrap);
    per_class: class → the same ranking restricted to that class's samples (σ from the whole population);
    label: the class of a per-class ranking (None for the global one); n: samples used.
    """

    order: torch.Tensor
    score: torch.Tensor
    sigma: torch.Tensor
    direction: torch.Tensor
    mean_grad: torch.Tensor
    layout: tuple[StyleDim, ...]
    target: str
    n: int
    ci_low: torch.Tensor | None = None
    ci_high: torch.Tensor | None = None
    bootstrap: int = 0
    seed: int = 0
    label: int | None = None
    per_class: dict[int, "Ranking"] = field(default_factory=dict)
    method: str = "gradient"  # or "black-box" (finite differences, BlackBoxRanking)
    images: int = 0  # images classified by a black-box ranking

    @property
    def style_dim(self) -> int:
        return int(self.score.shape[0])

    @property
    def abs_score(self) -> torch.Tensor:
        return self.score.abs()

    def rank_of(self) -> torch.Tensor:
        """int64 Tensor[S]: the 1-based rank of each dimension."""
        r = torch.empty_like(self.order)
        r[self.order] = torch.arange(1, self.style_dim + 1)
        return r

    def row(self, dim: int, rank: int | None = None) -> RankedDim:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 0 <= dim < self.style_dim:
            raise FailatlasError(f"dim must be a style dimension in [0, {self.style_dim}), got {dim!r}")
        d = self.layout[dim]
        has_ci = self.ci_low is not None
        return RankedDim(
            rank=int(self.rank_of()[dim]) if rank is None else rank, dim=int(dim), layer=d.name,
            resolution=int(d.resolution), kind=d.kind, channel=int(d.channel), score=float(self.score[dim]),
            abs_score=abs(float(self.score[dim])), direction=int(self.direction[dim]),
            sigma=float(self.sigma[dim]), mean_grad=float(self.mean_grad[dim]),
            ci_low=float(self.ci_low[dim]) if has_ci else None, ci_high=float(self.ci_high[dim]) if has_ci else None)

    def top(self, k: int = 10) -> list[RankedDim]:
        """The k best dimensions, best first."""
        return [self.row(int(d), rank=i + 1) for i, d in enumerate(self.order[:max(int(k), 0)].tolist())]

    def rows(self) -> list[RankedDim]:
        return self.top(self.style_dim)

    def to_csv(self, path: str | Path) -> Path:
        """Write ``ranking.csv`` (columns :data:`CSV_COLUMNS`, best first, floats as ``repr`` — exact and
        reproducible —, '\\n' line endings), atomically. Returns the path."""
        lines = [",".join(CSV_COLUMNS)]
        for r in self.rows():
            rec = dataclasses.asdict(r)
            lines.append(",".join(_csv_cell(rec[c]) for c in CSV_COLUMNS))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: options, then one entry per dimension (best first), then per-class rankings."""
        return {
            "format": JSON_FORMAT, "target": self.target, "n": self.n, "style_dim": self.style_dim,
            "bootstrap": self.bootstrap, "seed": self.seed, "label": self.label, "method": self.method,
            "images": self.images, "dims": [dataclasses.asdict(r) for r in self.rows()],
            "per_class": {str(c): r.to_json() for c, r in sorted(self.per_class.items())},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "ranking") -> "Ranking":
        """Rebuild a ranking from :meth:`to_json` output (e.g. a ``ranking.json`` read back)."""
        with _io.rebuilding(source, "ranking", "write it again with `failatlas rank`"):
            if obj.get("format") != JSON_FORMAT:
                raise ValueError("not a failatlas ranking")
            rows = obj["dims"]
            S = int(obj["style_dim"])
            if len(rows) != S or sorted(int(r["dim"]) for r in rows) != list(range(S)):
                raise ValueError(f"expected one entry for each of {S} dimensions")
            by_dim = sorted(rows, key=lambda r: int(r["dim"]))
            col = lambda k: torch.tensor([float(r[k]) for r in by_dim], dtype=torch.float64)  # noqa: E731
            has_ci = all(r.get("ci_low") is not None for r in by_dim)
            return cls(
                order=torch.tensor([int(r["dim"]) for r in rows], dtype=torch.int64),
                score=col("score"), sigma=col("sigma"), mean_grad=col("mean_grad"),
                direction=torch.tensor([int(r["direction"]) for r in by_dim], dtype=torch.int64),
                layout=tuple(StyleDim(str(r["layer"]), int(r["resolution"]), str(r["kind"]), int(r["channel"]),
                                      int(r["dim"])) for r in by_dim),
                target=_check_target(obj["target"]), n=int(obj["n"]),
                ci_low=col("ci_low") if has_ci else None, ci_high=col("ci_high") if has_ci else None,
                bootstrap=int(obj.get("bootstrap", 0)), seed=int(obj.get("seed", 0)), label=obj.get("label"),
                method=str(obj.get("method", "gradient")), images=int(obj.get("images", 0)),
                per_class={int(c): cls.from_json(r, source) for c, r in obj.get("per_class", {}).items()})

    @classmethod
    def read_json(cls, path: str | Path) -> "Ranking":
        """A ranking written by :meth:`to_json` (``ranking.json`` of ``failatlas rank`` or ``analyze``)."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "ranking file", "a ranking", JSON_VERSION,
                                   "pass the ranking.json of a `failatlas rank` or `failatlas analyze` run")
        return cls.from_json(obj, source=f"ranking file {path}")

    def format(self, k: int = 10) -> str:
        """The top k as a small text table."""
        head = f"{'rank':>4}  {'dim':>5}  {'layer':<10} {'res':>3}  {'kind':<5} {'ch':>4}  {'score':>11}  {'dir':>3}  {'sigma':>9}"
        if self.ci_low is not None:
            head += f"  {'95% CI':>23}"
        lines = [head]
        for r in self.top(k):
            line = (f"{r.rank:>4}  {r.dim:>5}  {r.layer:<10} {r.resolution:>3}  {r.kind:<5} {r.channel:>4}  "
                    f"{r.score:>11.4g}  {r.direction:>+3d}  {r.sigma:>9.4g}")
            if r.ci_low is not None:
                line += f"  [{r.ci_low:>10.4g}, {r.ci_high:>10.4g}]"
            lines.append(line)
        return "\n".join(lines)


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _order(score: torch.Tensor) -> torch.Tensor:
    """Dimensions by |score| descending, ties by dimension index (a stable, deterministic order)."""
    a = score.abs().numpy()
    return torch.from_numpy(np.lexsort((np.arange(a.shape[0]), -a)).astype(np.int64))


def _percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Percentile along dim 0 with linear interpolation (numpy's default), for any size."""
    xs = x.sort(dim=0).values
    pos = q * (xs.shape[0] - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _bootstrap_ci(grads: torch.Tensor, sigma: torch.Tensor, replicates: int, gen: torch.Generator,
                  disable: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """95% percentile interval of score = −σ · mean(g) over ``replicates`` resamples of the rows of
    grads: Tensor[n, S] (σ held fixed). Replicate means are count-weighted sums, one matmul per chunk."""
    n, S = grads.shape
    means = torch.empty(replicates, S, dtype=torch.float64)
    rows = max(1, min(n, (1 << 24) // max(S, 1)))  # bounds the float64 copy of the gradients
    for b0 in progress(range(0, replicates, 256), desc="bootstrap", unit="×256", disable=disable):
        b = min(256, replicates - b0)
        counts = torch.zeros(b, n, dtype=torch.float64)
        counts.scatter_add_(1, torch.randint(0, n, (b, n), generator=gen), torch.ones(b, n, dtype=torch.float64))
        acc = torch.zeros(b, S, dtype=torch.float64)
        for r0 in range(0, n, rows):
            acc += counts[:, r0:r0 + rows] @ grads[r0:r0 + rows].to(torch.float64)
        means[b0:b0 + b] = acc / n
    scores = -sigma * means
    return _percentile(scores, 0.025), _percentile(scores, 0.975)


def _make_ranking(grad_sum: torch.Tensor, n: int, sigma: torch.Tensor, layout: tuple[StyleDim, ...], target: str,
                  grads: torch.Tensor | None, bootstrap: int, seed: int, gen: torch.Generator | None,
                  label: int | None = None, disable: bool | None = None) -> Ranking:
    mean_grad = grad_sum / n
    score = -sigma * mean_grad
    ci_low = ci_high = None
    if bootstrap:
        ci_low, ci_high = _bootstrap_ci(grads, sigma, bootstrap, gen, disable)
    return Ranking(order=_order(score), score=score, sigma=sigma, direction=torch.sign(score).to(torch.int64),
                   mean_grad=mean_grad, layout=layout, target=target, n=n, ci_low=ci_low, ci_high=ci_high,
                   bootstrap=bootstrap, seed=seed, label=label)


class GradientRanking:
    """Rank StyleSpace dimensions by the population-averaged gradient of p_y (or of the logit of y).

    >>> ranking = GradientRanking(G, classifier).rank(population)
    >>> ranking.top(10)

    ``batch_size`` samples (None: 64 on CPU, 512 on an accelerator, see
    :func:`~failatlas.analysis.population.default_batch_size`) go through one forward and one backward;
    the models are put in eval mode while ranking (their modes are restored afterwards).
    """

    def __init__(self, generator: nn.Module, classifier: nn.Module, target: str = "probability",
                 batch_size: int | None = None, progress_bar: bool | None = None) -> None:
        self.generator = generator
        self.classifier = classifier
        self.target = _check_target(target)
        self.batch_size = check_batch_size(batch_size, generator)
        self.progress_bar = progress_bar
        check_class_counts(generator, classifier)

    def rank(self, population: Population, per_class: bool = False, bootstrap: int = 0, seed: int = 0,
             distributed: bool = False) -> Ranking | None:
        """Rank every dimension of s over ``population``.

        per_class: also rank within each class (``Ranking.per_class``; σ stays the whole population's).
        bootstrap: number of bootstrap resamples of the samples for 95% percentile intervals of every
        score (0: none); drawn from a ``torch.Generator`` seeded with ``seed``. The per-sample gradients
        are kept (Tensor[N, S]) only while this call runs, and only when bootstrap > 0.

        distributed: under ``torchrun`` (after :func:`failatlas.distributed.init`; every rank passes the
        same full population), each rank differentiates its contiguous block of whole batches; the
        per-batch float64 gradient sums (or, with per_class or bootstrap, the per-sample gradients) are
        all-gathered and summed in batch order exactly as in one process. Rank 0 returns the ranking,
        the other ranks None (bootstrap and per-class rankings are computed on rank 0 only). Without an
        initialized process group it changes nothing.
        """
        G, C = self.generator, self.classifier
        if not isinstance(population, Population):
            raise FailatlasError(f"rank() takes a Population (from sample_population), got {type(population).__name__}")
        if population.style_dim != G.style_dim:
            raise FailatlasError(f"the population has {population.style_dim} style dimensions but the generator "
                                 f"has {G.style_dim}; sample the population with this generator")
        check_class_counts(G, C, found=population.num_classes)
        if population.n < 2:
            raise FailatlasError(f"ranking needs at least 2 samples to measure σ, the population has {population.n}; "
                                 "use a larger --n")
        if isinstance(bootstrap, bool) or not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
            raise FailatlasError(f"bootstrap must be a non-negative number of resamples, got {bootstrap!r}")
        seed = check_seed(seed)  # before the gradients
        bootstrap = int(bootstrap)
        n, S = population.n, population.style_dim
        layout = tuple(G.style_layout())
        sigma = population.s.to(torch.float64).std(dim=0)
        grad_sum = torch.zeros(S, dtype=torch.float64)
        num_classes = population.num_classes
        class_sum = torch.zeros(num_classes, S, dtype=torch.float64) if per_class else None
        keep = [] if bootstrap else None
        disable = None if self.progress_bar is None else not self.progress_bar
        bs = self.batch_size

        def accumulate(g: torch.Tensor, y: torch.Tensor) -> None:
            g64 = g.to(torch.float64)
            grad_sum.add_(g64.sum(dim=0))
            if class_sum is not None:
                class_sum.index_add_(0, y, g64)
            if keep is not None:
                keep.append(g)

        part, dist = slice(0, n), None
        if distributed:
            from .. import distributed as dist

            if dist.sharding():
                part = dist.shard(n, block=bs)
            else:
                dist = None
        gather = dist is not None and (per_class or bootstrap)  # all-gather the per-sample gradients
        local: list[torch.Tensor] = []  # distributed: per-sample gradients, or per-batch float64 sums
        with _eval_mode(G, C), progress(part.stop - part.start, desc=f"gradients ({self.target})", unit="img",
                                        disable=disable) as bar:
            for start in range(part.start, part.stop, bs):
                s = population.s[start:start + bs]
                y = population.y[start:start + bs]
                g = style_gradients(G, C, s, y, self.target).detach().cpu()
                if not bool(torch.isfinite(g).all()):
                    raise FailatlasError(f"the gradients of samples {start}..{start + len(s) - 1} contain NaN or "
                                         "infinite values; check the classifier and generator weights")
                if dist is None:
                    accumulate(g, y)
                else:
                    local.append(g if gather else g.to(torch.float64).sum(dim=0, keepdim=True))
                bar.update(len(s))
        if dist is not None:
            if gather:
                empty = torch.zeros(0, S, dtype=_model_dtype_device(G)[0])
                every = dist.all_gather_cat(torch.cat(local) if local else empty)
                if not dist.is_main():
                    return None
                for start in range(0, n, bs):  # the single-process accumulation, batch by batch
                    accumulate(every[start:start + bs], population.y[start:start + bs])
            else:
                sums = dist.all_gather_cat(torch.cat(local) if local else torch.zeros(0, S, dtype=torch.float64))
                if not dist.is_main():
                    return None
                for row in sums:  # in batch order: the same float64 additions as one process
                    grad_sum.add_(row)
        grads = torch.cat(keep) if keep is not None else None
        gen = torch.Generator().manual_seed(int(seed)) if bootstrap else None
        ranking = _make_ranking(grad_sum, n, sigma, layout, self.target, grads, bootstrap, int(seed), gen,
                                disable=disable)
        if not per_class:
            return ranking
        classes = {}
        for c in range(num_classes):
            mask = population.y == c
            n_c = int(mask.sum())
            if n_c:  # classes absent from the population get no ranking
                classes[c] = _make_ranking(class_sum[c], n_c, sigma, layout, self.target,
                                           grads[mask] if grads is not None else None, bootstrap, int(seed),
                                           gen, label=c, disable=True)
        return dataclasses.replace(ranking, per_class=classes)


class BlackBoxRanking:
    """The gradient ranking without gradients, for classifiers that have none (ONNX, int8, remote).

    score_k = −σ_k · mean_i ∂p_y/∂s_ik, with each derivative a central finite difference,
    (p_y(s_i + hσ_k e_k) − p_y(s_i − hσ_k e_k)) / (2hσ_k), on the first ``n`` samples of the population
    (σ from the whole population). The 2·n·dim S images come from the walk engine, so a dimension of
    layer ℓ re-runs only the layers from ℓ on, and a ToRGB dimension costs only the classifier. It
    reproduces the gradient ranking *of those samples* (the float ONNX export of the shipped classifier: 9
    of the top 10, Spearman 0.996 over the top 50, 32 samples); how well n samples stand for the whole
    population is another matter: on the shipped models the exact gradients of the first 32 or 64 samples
    share 3 of the 2,000-sample ranking's top 10 (Spearman 0.42, 0.58), because the few samples near the
    decision boundary carry the mean. Raise ``n`` for a ranking of the population.

    ``h`` (in σ): 0.1 by default, 1.0 for a quantized classifier (``classifier.quantized``, e.g. an int8
    ONNX file): its outputs move in rounding steps, and differences over 0.1σ measured those (on the shipped
    int8 classifier, 2 of the same 32 samples' gradient top 10 and Spearman 0.62 with h = 0.1; 7 and 0.95 with
    h = 1; on 64 samples 1 and 9 of 10).

    >>> ranking = BlackBoxRanking(G, onnx_classifier, n=64).rank(population)
    """

    #: the finite-difference step (in σ) for float and for quantized classifiers
    H_FLOAT, H_QUANTIZED = 0.1, 1.0

    def __init__(self, generator: nn.Module, classifier: nn.Module, n: int | None = 64, h: float | None = None,
                 batch_size: int | None = 512, progress_bar: bool | None = None) -> None:
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
            raise FailatlasError(f"n (samples used) must be a positive integer or None (all), got {n!r}")
        if h is None:
            h = self.H_QUANTIZED if getattr(classifier, "quantized", False) else self.H_FLOAT
        if not (isinstance(h, (int, float)) and 0 < h <= 1 and math.isfinite(h)):
            raise FailatlasError(f"h (the finite-difference step, in σ) must be in (0, 1], got {h!r}")
        check_class_counts(generator, classifier)
        self.generator, self.classifier = generator, classifier
        self.n, self.h = (None if n is None else int(n)), float(h)
        self.batch_size = check_batch_size(batch_size, generator)
        self.progress_bar = progress_bar

    def rank(self, population: Population, distributed: bool = False) -> Ranking | None:
        """Rank every dimension of s over the first ``n`` samples of ``population``.

        distributed: under ``torchrun`` (after :func:`failatlas.distributed.init`; every rank passes the
        same full population), the *dimensions* are dealt out round-robin (rank r walks dims r, r + P, …:
        early layers cost more per dimension, so contiguous blocks would be uneven); every rank walks all
        ``n`` samples in the same chunks as one process, so each finite difference is computed exactly as
        there. The per-dimension columns are all-gathered and rank 0 sums them over the samples as one
        process does, so the ranking is bit-identical; rank 0 returns it, the other ranks None. (Sharding
        the samples instead would leave most ranks idle: the default n = 64 is one walk chunk.) Without an
        initialized process group it changes nothing.
        """
        from ..engine.walks import WalkEngine

        G = self.generator
        if not isinstance(population, Population):
            raise FailatlasError(f"rank() takes a Population (from sample_population), got {type(population).__name__}")
        if population.style_dim != G.style_dim:
            raise FailatlasError(f"the population has {population.style_dim} style dimensions but the generator "
                                 f"has {G.style_dim}; sample the population with this generator")
        if population.n < 2:
            raise FailatlasError(f"ranking needs at least 2 samples to measure σ, the population has {population.n}")
        sigma = population.s.to(torch.float64).std(dim=0)
        n = population.n if self.n is None else min(self.n, population.n)
        S = G.style_dim
        dims = torch.arange(S)
        dist = None
        if distributed:
            from .. import distributed as dist

            if dist.sharding():
                rank, size = dist.world()
                dims = torch.arange(rank, S, size)
            else:
                dist = None
        # σ = 0 dimensions (constant over the population) cannot be walked: their score is 0
        step_sigma = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
        res = WalkEngine(G, self.classifier, batch_size=self.batch_size).walk(
            population.s[:n], population.y[:n], dims, torch.tensor([-self.h, self.h]), step_sigma,
            torch.ones(dims.numel()), progress_bar=self.progress_bar)
        p_y, images = res.p_y, res.images
        if dist is not None:  # [n, K_r, 2] per rank → [n, S, 2] in dimension order
            cols = dist.all_gather_cat(p_y.permute(1, 0, 2).contiguous())  # [S, n, 2], rank-major
            images = int(dist.all_reduce_sum(torch.tensor([float(images)])).item())
            if not dist.is_main():
                return None
            size = dist.world()[1]
            order = torch.cat([torch.arange(r, S, size) for r in range(size)])
            p_y = torch.empty_like(cols)
            p_y[order] = cols
            p_y = p_y.permute(1, 0, 2)
        grads = (p_y[:, :, 1] - p_y[:, :, 0]) / (2 * self.h * step_sigma)  # [n, S] per raw style unit
        grads = torch.where(sigma > 0, grads, torch.zeros_like(grads))
        if not bool(torch.isfinite(grads).all()):
            raise FailatlasError("the classifier's probabilities contain NaN or infinite values; check its weights")
        ranking = _make_ranking(grads.sum(dim=0), n, sigma, tuple(G.style_layout()), "probability", None, 0, 0, None)
        return dataclasses.replace(ranking, method="black-box", images=images)


def is_differentiable(classifier: nn.Module) -> bool:
    """False for classifiers that run outside torch's autograd (``differentiable = False``, e.g. ONNX)."""
    return bool(getattr(classifier, "differentiable", True))


#: samples a black-box ranking walks by default (it classifies 2 · n · dim S images)
BLACK_BOX_N = 64


def check_black_box_n(n: Any) -> int:
    """``--black-box-n``: a number of samples ≥ 2 (the gradient ranking it is checked against, in
    ``compare``, needs two to measure σ), else one :class:`FailatlasError`."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise FailatlasError(f"--black-box-n must be a number of samples of at least 2, got {n!r}")
    return int(n)


def rank_any(G: nn.Module, classifier: nn.Module, population: Population, *, target: str = "probability",
             per_class: bool = False, bootstrap: int = 0, seed: int = 0, batch_size: int | None = None,
             black_box_n: int | None = BLACK_BOX_N, progress_bar: bool | None = None,
             distributed: bool = False) -> Ranking | None:
    """The gradient ranking when the classifier has gradients, else :class:`BlackBoxRanking` on the first
    ``black_box_n`` samples (probability target only; no per-class rankings or bootstrap: those options
    are then ignored, and the result's ``method`` says "black-box").

    distributed: sharded under ``torchrun`` (see :meth:`GradientRanking.rank` and
    :meth:`BlackBoxRanking.rank`); rank 0 gets the ranking, the other ranks None."""
    if is_differentiable(classifier):
        return GradientRanking(G, classifier, target=target, batch_size=batch_size,
                               progress_bar=progress_bar).rank(population, per_class=per_class,
                                                               bootstrap=bootstrap, seed=seed,
                                                               distributed=distributed)
    if target != "probability":
        raise FailatlasError(f"a classifier without gradients (ONNX) is ranked by finite differences of the "
                             f"probability; target {target!r} is not available for it")
    return BlackBoxRanking(G, classifier, n=black_box_n, progress_bar=progress_bar).rank(population,
                                                                                     distributed=distributed)


def ranking_agreement(reference: Ranking, other: Ranking, k: int = 10, spearman_k: int = 50) -> dict[str, Any]:
    """How well ``other`` reproduces ``reference`` (e.g. a black-box ranking against the gradient one):
    ``top_overlap``: how many of the reference's top ``k`` dimensions are in other's top ``k``;
    ``spearman``: Spearman's rank correlation of the two scores over the reference's top ``spearman_k``
    dimensions; ``sign_agreement``: the fraction of those with the same degrading direction."""
    if reference.style_dim != other.style_dim:
        raise FailatlasError(f"the rankings have {reference.style_dim} and {other.style_dim} dimensions")
    top = reference.order[:spearman_k]
    a, b = reference.score[top].numpy(), other.score[top].numpy()
    ranks = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)  # noqa: E731
    spearman = float(np.corrcoef(ranks(a), ranks(b))[0, 1]) if len(top) > 1 else float("nan")
    overlap = len(set(reference.order[:k].tolist()) & set(other.order[:k].tolist()))
    same = float((torch.sign(reference.score[top]) == torch.sign(other.score[top])).double().mean())
    return {"k": int(k), "top_overlap": overlap, "spearman_k": int(len(top)), "spearman": spearman,
            "sign_agreement": same}


def rank_dimensions(G: nn.Module, classifier: nn.Module, population: Population, target: str = "probability",
                    per_class: bool = False, bootstrap: int = 0, seed: int = 0, batch_size: int | None = None,
                    progress_bar: bool | None = None) -> Ranking:
    """Functional form of :meth:`GradientRanking.rank`."""
    return GradientRanking(G, classifier, target=target, batch_size=batch_size,
                           progress_bar=progress_bar).rank(population, per_class=per_class, bootstrap=bootstrap,
                                                           seed=seed)


# --- the `failatlas rank` job ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RankRun:
    """What :func:`run_rank` computed and wrote. Under torchrun, ranks other than 0 get ``ranking``,
    ``separation`` and ``summary`` None and no files (rank 0 writes them)."""

    out: Path
    population: Population
    ranking: Ranking | None
    separation: Any  # SeparationResult
    summary: dict[str, Any] | None
    files: dict[str, Path]
    timings: dict[str, float]
    rank: int = 0
    world_size: int = 1
    notes: tuple[str, ...] = ()  # about the models' data (failatlas._paths.data_notes)

    def format(self, k: int = 10) -> str:
        """What ``failatlas rank`` prints: the population, the top k, the separation summary, the notes, the
        files."""
        from .direction import describe as describe_direction

        if self.ranking is None:
            return f"rank {self.rank} of {self.world_size}: shard done; rank 0 writes the results to {self.out}"
        pop, m = self.population, len(self.summary["top_dims"])
        return "\n".join([
            f"population: {pop.n} samples{describe_classes(pop.classes)}, accuracy {pop.accuracy:.4f} "
            f"({pop.n_mis} mis-classified); "
            f"target {self.ranking.target}",
            self.ranking.format(k),
            f"separation: mean KS of the top {m} dims {self.summary[f'top{m}_mean_ks']:.3f}, "
            f"of {m} random others {self.summary[f'random{m}_mean_ks']:.3f}; by chance "
            f"{self.summary['chance_mean_ks']:.3f}",
            describe_direction(self.summary.get("latent_direction"), self.summary.get("latent_direction_error")),
            *(f"note: {n}" for n in self.notes),
            f"wrote {', '.join(sorted(p.name for p in self.files.values()))} to {self.out} "
            f"({', '.join(f'{name} {s:.1f} s' for name, s in self.timings.items())})",
        ])


DEFAULT_CLASSIFIER = "mnist/classifier-corrupted"


def run_rank(generator: str | Path = "mnist/generator", classifier: str | Path = DEFAULT_CLASSIFIER, *,
             out: str | Path, n: int = 10000, seed: int = 0, target: str = "probability", per_class: bool = False,
             bootstrap: int = 0, batch_size: int | None = None, black_box_n: int = BLACK_BOX_N,
             classes: Sequence[int] | None = None, progress_bar: bool | None = None,
             verbose: bool = True) -> RankRun:
    """The ``failatlas rank`` job: load the models (folders, shipped names, or a classifier file: ``.onnx``,
    ``.pt``, ``.pt2``), sample a population, rank
    the dimensions, measure their separation, and write ``ranking.csv``, ``ranking.json``,
    ``population.npz``, ``separation.csv`` and ``separation.png`` (+ ``separation.json``, its data) into
    ``out``. ``verbose``: each stage announced on stderr (``failatlas rank: [2/4] ranking …``), on a
    terminal or not; ``progress_bar``: tqdm bars (None: only on a terminal). ``black_box_n``: the samples
    a classifier without gradients is ranked on by finite differences (:class:`BlackBoxRanking`).
    ``classes``: draw the population from these classes only (None: all of the generator's classes).

    Under ``torchrun`` (WORLD_SIZE > 1) the population and the gradients (for a classifier without
    gradients, the black-box ranking's dimensions) are sharded across the ranks
    (:mod:`failatlas.distributed`, gloo on CPU); rank 0 alone computes the separation, the bootstrap and
    the per-class rankings, writes the files and gets the full result; the other ranks return after the
    last collective call with ``ranking`` None. The ranking equals the single-process one."""
    from .. import distributed as dist
    from .._progress import Stages
    from .._paths import data_notes
    from ..deploy import load_any_classifier
    from ..models.stylegan2 import load_generator
    from ..report.figures import plot_separation
    from .. import _provenance
    from .._paths import resolve_classifier, resolve_model
    from .pipeline import command_line, generator_info, model_info
    from .population import sample_population
    from .direction import FailureDirection
    from .separation import Separation, weak_separation

    _check_target(target)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise FailatlasError(f"--bootstrap must be a non-negative number of resamples, got {bootstrap!r}")
    black_box_n = check_black_box_n(black_box_n)
    classes = check_classes(classes)
    check_population_size(n)  # before the first stage line
    out = _io.check_out_folder(out, names=RANK_FILES)
    rank, world_size = dist.world()
    distributed = world_size > 1
    if rank != 0:
        progress_bar, verbose = False, False
    stage = Stages("rank", ("population", "ranking", "separation", "files"), verbose)
    gpath = resolve_model(generator)
    G = load_generator(gpath)
    C = load_any_classifier(classifier)
    default = str(classifier) == DEFAULT_CLASSIFIER  # the one taken without --classifier: say so
    check_class_counts(G, C, name=str(classifier) + (" (rank's default; --classifier names another)" if default
                                                     else ""))
    # which models, for the record: the paths as given are relative to a working directory nobody records
    cpath = resolve_classifier(classifier)
    ginfo, cinfo = generator_info(generator, gpath), model_info(classifier, cpath, cpath.resolve().name)
    models = {"generator": ginfo.to_json(), "classifier": cinfo.to_json()}
    command = command_line("rank", ginfo, [cinfo], [
        "--n", n, *(["--classes", *check_classes(classes)] if classes is not None else []), "--seed", seed,
        "--target", target, *(["--per-class"] if per_class else []), "--bootstrap", bootstrap,
        "--batch-size", check_batch_size(batch_size, G), "--black-box-n", black_box_n], out)
    if distributed and _model_dtype_device(G)[1].type != "cpu":
        raise FailatlasError("failatlas under torchrun runs on the CPU (gloo) only for now")
    dist.init()  # every rank checks the same things above, so they all fail or all get here
    with stage("population", f"{n} samples, seed {seed}{describe_classes(classes)}"):
        pop = sample_population(G, C, n, seed=seed, classes=classes, batch_size=batch_size,
                                progress_bar=progress_bar, distributed=distributed)
    layout = tuple(G.style_layout())
    separation = Separation(pop, layout=layout)  # fails now, before the gradients, if a group is empty
    detail = ", ".join([target] + (["per class"] if per_class else [])
                       + ([f"bootstrap {bootstrap}"] if bootstrap else []))
    with stage("ranking", detail):
        ranking = rank_any(G, C, pop, target=target, per_class=per_class, bootstrap=bootstrap, seed=seed,
                           batch_size=batch_size, black_box_n=black_box_n, progress_bar=progress_bar,
                           distributed=distributed)
    if ranking is None:  # not rank 0 under torchrun: its part is done
        return RankRun(out=out, population=pop, ranking=None, separation=None, summary=None, files={},
                       timings=dict(stage.timings), rank=rank, world_size=world_size)
    with stage("separation", f"{int(pop.well.sum())} well vs {int((~pop.well).sum())} mis-classified"):
        sep = separation.compute()
        summary = sep.summary(ranking, k=10, seed=seed)
        try:  # the check of the generator that analyze also makes (failatlas.analysis.direction)
            summary["latent_direction"] = FailureDirection(G, pop, seed=seed).fit().summary()
        except FailatlasError as exc:
            summary["latent_direction"], summary["latent_direction_error"] = None, str(exc)
    # written into a staging folder inside out and moved into place together (signals held): a Ctrl-C or a
    # failure part-way leaves an earlier run's files as they were, not some of them beside this run's
    with stage("files", str(out)), _io.staged_files(out) as tmp:
        ranking.to_csv(tmp / "ranking.csv")
        pop.to_npz(tmp / "population.npz")
        sep.to_csv(tmp / "separation.csv")
        plot_separation(sep, ranking, tmp / "separation.png", k=3, seed=seed)  # + separation.json
        name = Path(str(classifier)).name
        notes = data_notes(generator, {name: C}, classes) + weak_separation({name: summary})
        _io.write_json(tmp / "ranking.json", {**ranking.to_json(), "summary": summary, "notes": notes,
                                              "generator": str(generator), "classifier": str(classifier),
                                              "population_classes": None if classes is None else list(classes),
                                              "models": models, "command": command,
                                              "versions": _provenance.versions(),
                                              "batch_size": check_batch_size(batch_size, G),
                                              # the run's other files, for failatlas verify
                                              "file_sha256": _io.folder_sha256(tmp)})
    files = {"ranking_csv": out / "ranking.csv", "population": out / "population.npz",
             "separation_csv": out / "separation.csv", "separation_png": out / "separation.png",
             "separation_json": out / "separation.json", "ranking_json": out / "ranking.json"}
    return RankRun(out=out, population=pop, ranking=ranking, separation=sep, summary=summary, files=files,
                   timings=dict(stage.timings), notes=tuple(notes))
