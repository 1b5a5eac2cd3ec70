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
   style dimension as it is, after removing what p predicts of w (w − p·v, v = Σu / uᵀΣu, mapped through the
   affine style layers: s − p·(styles(v) − styles(0)), exact), and with shuffled labels (the chance level);
4. the direction's effect on the styles, in σ units: how many dimensions hold half of it.

``share_explained`` = (mean KS as it is − after removal) / (as it is − chance): near 1, one latent factor
explains the separation (an entangled generator if it is spread over many dimensions); near 0, the failures
differ along many factors. It is a diagnostic beside DESIGN's analysis, not part of it.

>>> FailureDirection(G, population, seed=0).fit().summary()
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import FailatlasError
from .population import Population
from .separation import auroc, ks_statistic, separation

MIN_MIS = 10  # mis-classified samples needed in each half


@dataclass(frozen=True)
class FailureDirectionResult:
    """The fitted direction and its held-out figures (see the module docstring).

    direction: float64 Tensor[w_dim], unit norm, pointing towards the mis-classified samples;
    style_shift: float64 Tensor[S], the change of s for one unit of the projection (what is removed);
    dims_for_half: the number of style dimensions that hold half of Σ (style_shift / σ)²."""

    direction: torch.Tensor
    style_shift: torch.Tensor
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
                "style_dims": int(self.style_shift.numel())}

    def to_json(self) -> dict[str, Any]:
        return {**self.summary(), "direction": self.direction.tolist(), "style_shift": self.style_shift.tolist()}


class FailureDirection:
    """The direction of W that best separates mis- from well-classified samples, fitted on one half of the
    population and measured on the other (see the module docstring).

    >>> result = FailureDirection(G, population, seed=0).fit()
    >>> result.ks_heldout, result.share_explained, result.dims_for_half
    """

    def __init__(self, G: nn.Module, population: Population, seed: int = 0, ridge: float = 1e-3) -> None:
        if not isinstance(population, Population):
            raise FailatlasError(f"FailureDirection takes a Population, got {type(population).__name__}")
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
            raise FailatlasError(f"ridge must be a positive number, got {ridge!r}")
        self.G, self.population, self.seed, self.ridge = G, population, int(seed), float(ridge)

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
            n_mis = int((part & ~well).sum())
            if n_mis < MIN_MIS or int((part & well).sum()) < 2:
                raise FailatlasError(f"the failure direction needs at least {MIN_MIS} mis-classified and 2 "
                                     f"well-classified samples in each half; the {name} half has {n_mis} "
                                     f"mis-classified of {int(part.sum())}; use a larger --n")
        centre = self._class_centres(w, y, well & fit)
        wc = w - centre[y]
        ok = wc[fit & well]
        sigma_w = torch.cov(ok.T) if ok.shape[0] > 1 else torch.zeros(w.shape[1], w.shape[1], dtype=w.dtype)
        sigma_w = sigma_w.reshape(w.shape[1], w.shape[1])
        lam = self.ridge * float(torch.trace(sigma_w)) / w.shape[1] or self.ridge
        gap = wc[fit & ~well].mean(0) - ok.mean(0)
        u = torch.linalg.solve(sigma_w + lam * torch.eye(w.shape[1], dtype=w.dtype), gap)
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
        return FailureDirectionResult(
            direction=u, style_shift=style_shift, n_fit=int(fit.sum()), n_heldout=int(held.sum()),
            n_mis_heldout=int(mis[held].sum()), seed=self.seed, ks_fit=ks_p(fit), ks_heldout=ks_p(held),
            auroc_heldout=float(auroc(p[held, None], mis[held])[0]),
            mean_ks_heldout=mean_ks(sh, mis[held]), mean_ks_removed=mean_ks(removed[held], mis[held]),
            mean_ks_shuffled=mean_ks(sh, shuffled), dims_for_half=min(half, load.numel()))

    @staticmethod
    def _class_centres(w: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per class, the mean w of the masked samples (the masked mean of all classes for a class without any)."""
        k = int(y.max()) + 1
        overall = w[mask].mean(0)
        centres = overall.expand(k, -1).clone()
        for c in range(k):
            m = mask & (y == c)
            if bool(m.any()):
                centres[c] = w[m].mean(0)
        return centres

    def _style_shift(self, v: torch.Tensor) -> torch.Tensor:
        """styles(v) − styles(0): the style layers are affine, so this is the change of s per unit of v."""
        p = next(self.G.parameters())
        pair = torch.stack([v, torch.zeros_like(v)]).to(device=p.device, dtype=p.dtype)
        with torch.no_grad():
            out = self.G.styles(pair).to(device="cpu", dtype=torch.float64)
        return out[0] - out[1]
