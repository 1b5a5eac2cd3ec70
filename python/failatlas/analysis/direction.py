"""One direction of W that separates the mis-classified samples, and how much of the per-dimension separation
it explains: a check of how entangled the generator is, for reading Fig. 4.

The paper (and DESIGN §4.2) expects the top-ranked StyleSpace dimensions to separate well- from
mis-classified samples and random ones not to. That needs a generator whose failure factors sit in a few
style channels. When one latent factor drives the failures but the generator spreads it over most
channels, every dimension separates a little and the top ones stand out less; this analysis measures that:

1. the population is split in two halves (seeded);
2. on the fit half, w is centred per class (on the class's well-classified mean) and the Fisher direction
   u = (Σ + λI)⁻¹ (mean_mis − mean_well) is fitted (Σ: the within-class covariance of the well-classified
   samples, λ = 10⁻³ · tr Σ / dim W);
3. on the held-out half: the KS statistic and AUROC of the projection p = (w − m_y)·u, the mean KS of every
   style dimension as it is, after removing what p predicts of w (w − p·v, v = Σ'u / uᵀΣ'u with
   Σ' = Σ + λI, mapped through the affine style layers: s − p·(styles(v) − styles(0)), exact), and with
   shuffled labels (the chance level);
4. the direction's effect on the styles, in σ units: how many dimensions hold half of it;
   and, for the whole population, how many independent directions the styles span
   (:func:`effective_dimension`): when S's dimensions are mixtures of a few factors, any factor behind the
   failures shows in most of them, and random dimensions separate almost as well as the top ones;
5. :func:`walk_failure_direction` renders each class's average digit (the style of its mean
   well-classified w) moved along the direction, in units of the projection's spread among the
   well-classified samples, with p_y: what the failures have in common, as images.

``share_explained`` = (mean KS as it is − after removal) / (as it is − chance): near 1, one latent factor
explains the separation (an entangled generator if it is spread over many dimensions); near 0, the failures
differ along many factors. It is a diagnostic beside DESIGN's analysis, not part of it.

>>> FailureDirection(G, population, seed=0).fit().summary()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import _io
from ..errors import FailatlasError, ResultFileError
from .population import Population
from .separation import auroc, ks_statistic, separation

JSON_FORMAT = "failatlas-failure-direction"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)
_JSON_HINT = ("pass the failure_direction.json of a `failatlas analyze` run, or a file written from "
              "FailureDirectionResult.to_json()")
_FLOATS = ("spread", "mis_position", "ks_fit", "ks_heldout", "auroc_heldout", "mean_ks_heldout", "mean_ks_removed",
           "mean_ks_shuffled", "style_effective_dims")
_INTS = ("n_fit", "n_heldout", "n_mis_heldout", "seed", "dims_for_half")
MIN_GROUP = 10  # well- and mis-classified samples needed in each half
STEPS = (-2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0)  # the walk's positions, in units of the projection's spread


@dataclass(frozen=True, eq=False)
class FailureDirectionResult:
    """The fitted direction and its held-out figures (see the module docstring).

    direction: float64 Tensor[w_dim], unit norm, pointing towards the mis-classified samples;
    removal: float64 Tensor[w_dim], v = Σ'u / uᵀΣ'u: moving w by t·v moves the projection by t;
    style_shift: float64 Tensor[S], styles(v) − styles(0), the change of s per unit of the projection;
    centres: float64 Tensor[K, w_dim], each class's mean w over the well-classified samples of the fit half
    (K = the classifier's classes; a class without any there gets the mean of all of them, and is left out of
    ``classes``, the classes that have their own);
    spread: the standard deviation of the projection over the well-classified samples of the fit half;
    mis_position: the held-out mis-classified samples' mean projection, in units of ``spread``;
    dims_for_half: the number of style dimensions that hold half of Σ (style_shift / σ)²;
    style_effective_dims: :func:`effective_dimension` of the whole population's styles."""

    direction: torch.Tensor
    removal: torch.Tensor
    style_shift: torch.Tensor
    centres: torch.Tensor
    classes: tuple[int, ...]
    spread: float
    mis_position: float
    n_fit: int
    n_heldout: int
    n_mis_heldout: int
    seed: int
    ks_fit: float
    ks_heldout: float
    auroc_heldout: float
    mean_ks_heldout: float
    mean_ks_removed: float
    mean_ks_shuffled: float
    dims_for_half: int
    style_effective_dims: float

    @property
    def share_explained(self) -> float | None:
        above = self.mean_ks_heldout - self.mean_ks_shuffled
        if not above > 0:
            return None
        return (self.mean_ks_heldout - self.mean_ks_removed) / above

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no tensors)."""
        return {"n_fit": self.n_fit, "n_heldout": self.n_heldout, "n_mis_heldout": self.n_mis_heldout,
                "seed": self.seed, "ks_fit": self.ks_fit, "ks_heldout": self.ks_heldout,
                "auroc_heldout": self.auroc_heldout, "mean_ks_heldout": self.mean_ks_heldout,
                "mean_ks_removed": self.mean_ks_removed, "mean_ks_shuffled": self.mean_ks_shuffled,
                "share_explained": self.share_explained, "dims_for_half": self.dims_for_half,
                "style_dims": int(self.style_shift.numel()), "style_effective_dims": self.style_effective_dims,
                "spread": self.spread, "mis_position": self.mis_position}

    def to_json(self) -> dict[str, Any]:
        return {"format": JSON_FORMAT, "version": JSON_VERSION, **self.summary(),
                "direction": self.direction.tolist(), "removal": self.removal.tolist(),
                "style_shift": self.style_shift.tolist(), "centres": self.centres.tolist(),
                "classes": list(self.classes)}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "failure direction") -> "FailureDirectionResult":
        """Rebuild a result from :meth:`to_json` output (the summary's derived figures are recomputed)."""
        if isinstance(obj, dict) and "format" not in obj and "direction" in obj:
            raise ResultFileError(f"{source} was written by an older failatlas, before the failure direction's "
                                  "format was recorded; run failatlas analyze again")
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a failure direction", JSON_VERSION, _JSON_HINT)
        with _io.rebuilding(source, "failure direction", "fit it again"):
            def tensor(key: str, ndim: int) -> torch.Tensor:
                t = torch.tensor(obj[key], dtype=torch.float64)
                if t.ndim != ndim:
                    raise ValueError(f"{key} must have {ndim} dimension(s), found {t.ndim}")
                return t

            return cls(direction=tensor("direction", 1), removal=tensor("removal", 1),
                       style_shift=tensor("style_shift", 1), centres=tensor("centres", 2),
                       classes=tuple(int(c) for c in obj["classes"]),
                       **{k: float("nan") if obj[k] is None else float(obj[k]) for k in _FLOATS},
                       **{k: int(obj[k]) for k in _INTS})

    @classmethod
    def read_json(cls, path: str | Path, classifier: str | None = None) -> "FailureDirectionResult":
        """A result written by :meth:`to_json`, or one classifier's from the ``failure_direction.json`` of
        ``failatlas analyze`` (``classifier``: its name; may be left out when the file holds one)."""
        obj = _io.load_result_json(path, "failure-direction file")
        source = f"failure-direction file {path}"
        fitted = {k: v for k, v in obj.items() if isinstance(v, dict)} if isinstance(obj, dict) else {}
        one = not isinstance(obj, dict) or "format" in obj or "note" not in obj or not fitted
        name, entry = _io.classifier_entry(None if one else fitted, classifier, source, "failure directions")
        return cls.from_json(obj, source) if one else cls.from_json(entry, f"{source}, classifier {name!r}")


def describe(summary: dict[str, Any] | None, why: str | None = None) -> str:
    """One line for the commands' text output, from :meth:`FailureDirectionResult.summary` (None: not
    fitted, because of ``why``)."""
    if not summary:
        return f"failure direction in W: none ({why or 'not fitted'})"
    share = summary["share_explained"]
    explained = "–" if share is None else "none" if share <= 0 else f"{100 * share:.0f}%"
    return (f"failure direction in W (held-out half): KS {summary['ks_heldout']:.3f}; removing it lowers the "
            f"dimensions' mean KS {summary['mean_ks_heldout']:.3f} → {summary['mean_ks_removed']:.3f} (chance "
            f"{summary['mean_ks_shuffled']:.3f}, {explained} explained); half its effect over "
            f"{summary['dims_for_half']} of {summary['style_dims']} dims"
            + (f"; the styles span about {summary['style_effective_dims']:.0f} independent directions"
               if summary.get("style_effective_dims") is not None else ""))


def effective_dimension(x: torch.Tensor) -> float:
    """How many independent directions the columns of ``x`` [N, D] span: the participation ratio
    (Σλ)² / Σλ² of the eigenvalues λ of their correlation matrix (constant columns left out). D for
    uncorrelated columns, 1 when every column is a multiple of one factor. Per-dimension statistics such as
    the KS do not depend on a dimension's scale, hence the correlation rather than the covariance. Needs no
    eigendecomposition: Σλ = trace R and Σλ² = ‖R‖²_F. NaN with fewer than 2 rows or no varying column."""
    x = x.detach().to(torch.float64).cpu()
    if x.ndim != 2 or x.shape[0] < 2:
        return float("nan")
    x = x - x.mean(0)
    sd = x.std(0)
    x = x[:, sd > 0] / sd[sd > 0]
    if x.shape[1] == 0:
        return float("nan")
    r = x.T @ x / (x.shape[0] - 1)
    return float(torch.trace(r) ** 2 / (r * r).sum())


class FailureDirection:
    """The direction of W that best separates mis- from well-classified samples, fitted on one half of the
    population and measured on the other (see the module docstring).

    >>> result = FailureDirection(G, population, seed=0).fit()
    >>> result.ks_heldout, result.share_explained, result.dims_for_half
    """

    def __init__(self, G: nn.Module, population: Population, seed: int = 0, ridge: float = 1e-3,
                 style_effective_dims: float | None = None) -> None:
        """style_effective_dims: :func:`effective_dimension` of ``population.s`` when the caller has it already
        (several classifiers' populations share their styles); None: computed here."""
        if not isinstance(population, Population):
            raise FailatlasError(f"FailureDirection takes a Population, got {type(population).__name__}")
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
            raise FailatlasError(f"ridge must be a positive number, got {ridge!r}")
        self.G, self.population, self.seed, self.ridge = G, population, int(seed), float(ridge)
        self.style_effective_dims = style_effective_dims

    def fit(self) -> FailureDirectionResult:
        pop = self.population
        w = pop.w.detach().to(torch.float64).cpu()
        s = pop.s.detach().to(torch.float64).cpu()
        y, well = pop.y.cpu(), pop.well.cpu()
        gen = torch.Generator().manual_seed(self.seed)
        fit = torch.zeros(pop.n, dtype=torch.bool)
        fit[torch.randperm(pop.n, generator=gen)[: pop.n // 2]] = True
        held = ~fit
        for name, part in (("fit", fit), ("held-out", held)):
            n_mis, n_well = int((part & ~well).sum()), int((part & well).sum())
            if min(n_mis, n_well) < MIN_GROUP:
                raise FailatlasError(f"the failure direction needs at least {MIN_GROUP} well- and {MIN_GROUP} "
                                     f"mis-classified samples in each half; the {name} half has {n_well} and "
                                     f"{n_mis}; use a larger --n")
        centre, own = self._class_centres(w, y, well & fit, pop.num_classes)
        wc = w - centre[y]
        ok = wc[fit & well]
        sigma_w = torch.cov(ok.T) if ok.shape[0] > 1 else torch.zeros(w.shape[1], w.shape[1], dtype=w.dtype)
        sigma_w = sigma_w.reshape(w.shape[1], w.shape[1])
        lam = self.ridge * float(torch.trace(sigma_w)) / w.shape[1] or self.ridge
        sigma_w = sigma_w + lam * torch.eye(w.shape[1], dtype=w.dtype)  # Σ' = Σ + λI from here on
        gap = wc[fit & ~well].mean(0) - ok.mean(0)
        u = torch.linalg.solve(sigma_w, gap)
        if not bool(torch.isfinite(u).all()) or float(u.norm()) == 0:
            raise FailatlasError("the failure direction could not be fitted (the well- and mis-classified samples "
                                 "have the same mean in W); nothing to report")
        u = u / u.norm()
        p = wc @ u
        v = sigma_w @ u / (u @ sigma_w @ u)
        style_shift = self._style_shift(v)
        removed = s - p[:, None] * style_shift[None]

        mis = ~well
        ks_p = lambda part: float(ks_statistic(p[part, None], mis[part])[0])  # noqa: E731
        mean_ks = lambda x, m: float(separation(x, ~m).ks.mean())  # noqa: E731  (well = ~m)
        sh = s[held]
        shuffled = mis[held][torch.randperm(int(held.sum()), generator=gen)]
        sigma_s = s.std(dim=0).clamp_min(1e-12)
        load = torch.sort((style_shift / sigma_s) ** 2, descending=True).values
        half = int(torch.searchsorted(load.cumsum(0), 0.5 * float(load.sum())).item()) + 1
        spread = float(p[fit & well].std()) if int((fit & well).sum()) > 1 else 0.0
        spread = spread if spread > 0 else 1.0
        return FailureDirectionResult(
            direction=u, removal=v, style_shift=style_shift, centres=centre, classes=own, spread=spread,
            mis_position=float(p[held & mis].mean()) / spread, n_fit=int(fit.sum()), n_heldout=int(held.sum()),
            n_mis_heldout=int(mis[held].sum()), seed=self.seed, ks_fit=ks_p(fit), ks_heldout=ks_p(held),
            auroc_heldout=float(auroc(p[held, None], mis[held])[0]),
            mean_ks_heldout=mean_ks(sh, mis[held]), mean_ks_removed=mean_ks(removed[held], mis[held]),
            mean_ks_shuffled=mean_ks(sh, shuffled), dims_for_half=min(half, load.numel()),
            style_effective_dims=(effective_dimension(s) if self.style_effective_dims is None
                                  else float(self.style_effective_dims)))

    @staticmethod
    def _class_centres(w: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                       k: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Per class, the mean w of the masked samples (the masked mean of all classes for a class without any),
        and the classes that have masked samples of their own."""
        k = max(k, int(y.max()) + 1)
        centres = w[mask].mean(0).expand(k, -1).clone()
        own = []
        for c in range(k):
            m = mask & (y == c)
            if bool(m.any()):
                centres[c] = w[m].mean(0)
                own.append(c)
        return centres, tuple(own)

    def _style_shift(self, v: torch.Tensor) -> torch.Tensor:
        """styles(v) − styles(0): the style layers are affine, so this is the change of s per unit of v."""
        p = next(self.G.parameters())
        pair = torch.stack([v, torch.zeros_like(v)]).to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            out = self.G.styles(pair).to(device="cpu", dtype=torch.float64)
        return out[0] - out[1]


@dataclass(frozen=True, eq=False)
class DirectionWalk:
    """Each class's average digit moved along the failure direction.

    images: uint8 Tensor[K, T, R, R] (0 = −1, 255 = +1); p_y: float64 Tensor[K, T]; classes: the K classes
    (rows); steps: the T positions (columns), in units of the projection's ``spread`` (0: the average digit);
    mis_position: where the mis-classified samples sit on average, in the same units."""

    images: torch.Tensor
    p_y: torch.Tensor
    classes: tuple[int, ...]
    steps: tuple[float, ...]
    spread: float
    mis_position: float

    def to_json(self) -> dict[str, Any]:
        """The data of the figure (no images)."""
        return {"classes": list(self.classes), "steps": list(self.steps), "spread": self.spread,
                "mis_position": self.mis_position, "p_y": self.p_y.tolist()}


def walk_failure_direction(G: nn.Module, classifier: nn.Module, result: FailureDirectionResult,
                           steps: tuple[float, ...] = STEPS, batch_size: int | None = None) -> DirectionWalk:
    """Render every class's average digit (w = its centre) moved by step · spread · v for each step, and
    classify it: one row per class, one column per step. Const noise, as everywhere in the analysis."""
    from ..models.adapter import classifier_view
    from .manipulation import to_uint8
    from .population import _eval_mode, _model_dtype_device, check_batch_size, check_class_counts, check_logits

    if not isinstance(result, FailureDirectionResult):
        raise FailatlasError(f"walk_failure_direction takes a FailureDirectionResult, got {type(result).__name__}")
    steps = tuple(float(x) for x in steps)
    if not steps or not all(math.isfinite(x) for x in steps):
        raise FailatlasError(f"steps must be finite numbers, got {steps!r}")
    check_class_counts(G, classifier)
    bs = check_batch_size(batch_size, G)
    dtype, device = _model_dtype_device(G)
    cdtype, cdevice = _model_dtype_device(classifier)
    classes = torch.tensor(result.classes, dtype=torch.long)
    K, T = len(classes), len(steps)
    if K == 0:
        raise FailatlasError("no class has a well-classified sample to start the walk from")
    offsets = torch.tensor(steps, dtype=torch.float64)[:, None] * result.spread * result.removal[None]
    w = (result.centres[classes][:, None, :] + offsets[None]).reshape(K * T, -1)
    labels = classes.repeat_interleave(T)
    images, probs = [], []
    with _eval_mode(G, classifier), torch.no_grad():
        for i in range(0, K * T, bs):
            img = G.synthesis_from_styles(G.styles(w[i:i + bs].to(device, dtype)), noise_mode="const")
            logits = check_logits(classifier(classifier_view(img).to(cdevice, cdtype)), img.shape[0], classifier, i)
            yy = labels[i:i + bs].to(logits.device)
            probs.append(torch.softmax(logits.double(), dim=1).gather(1, yy[:, None]).squeeze(1).cpu())
            images.append(to_uint8(img))
    img = torch.cat(images)
    return DirectionWalk(images=img.reshape(K, T, *img.shape[1:]), p_y=torch.cat(probs).reshape(K, T),
                         classes=tuple(result.classes), steps=steps, spread=result.spread,
                         mis_position=result.mis_position)
