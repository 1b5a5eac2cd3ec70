"""t-SNE maps of the three latent spaces, coloured well vs mis-classified (DESIGN §4.3, Fig. 3).

Z, W and S are embedded separately in 2-D with :class:`sklearn.manifold.TSNE` (init "pca", learning rate
"auto", Barnes–Hut). Decisions:

* At most ``max_points`` samples are embedded (t-SNE is O(n log n) per iteration but slow in absolute
  terms): a subset drawn without replacement by a ``torch.Generator`` seeded with ``seed``, kept in
  population order; the whole population when it is no larger.
* A space wider than ``pca_dims`` (50) is first reduced with :class:`sklearn.decomposition.PCA`
  (``svd_solver="full"``, deterministic) to min(pca_dims, points) components: always S; W and Z when wider
  (the paper's generator has z, w of 512 dimensions; the 'tiny' one 16 and 32). The number of components and
  the variance they explain are recorded.
* sklearn requires perplexity < points: a perplexity ≥ the number of points is lowered to (points − 1) / 3
  (t-SNE looks at ~3·perplexity neighbours) and both values are recorded.
* Fewer than 5 points → :class:`FailatlasError`.

Same population, options and seed → the same embeddings (sklearn's ``random_state`` is the seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import _io
from ..errors import FailatlasError
from .population import Population

SPACES = ("z", "w", "s")
MIN_POINTS = 5
JSON_FORMAT = "failatlas-tsne"
JSON_VERSION = 1  # the newest version of the format this failatlas reads (files without "version" are 1)
CSV_COLUMNS = ("index", "y", "well", "z_x", "z_y", "w_x", "w_y", "s_x", "s_y")


@dataclass(frozen=True, eq=False)
class TSNEResult:
    """2-D t-SNE embeddings of Z, W and S of the same M samples.

    z, w, s: float64 Tensor[M, 2] (arbitrary t-SNE units); indices: int64 Tensor[M], the samples' positions
    in the population (ascending); y: int64 Tensor[M]; well: bool Tensor[M]; perplexity: the value used
    (perplexity_requested: the one asked for); pca_components: space → number of PCA components fed to
    t-SNE (None: the raw space); explained_variance: space → fraction of variance kept by the PCA (None
    without PCA); kl_divergence: space → t-SNE's final KL divergence.
    """

    z: torch.Tensor
    w: torch.Tensor
    s: torch.Tensor
    indices: torch.Tensor
    y: torch.Tensor
    well: torch.Tensor
    perplexity: float
    perplexity_requested: float
    seed: int
    max_points: int
    max_iter: int
    pca_components: dict[str, int | None]
    explained_variance: dict[str, float | None]
    kl_divergence: dict[str, float]

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    def embedding(self, space: str) -> torch.Tensor:
        if space not in SPACES:
            raise FailatlasError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
        return getattr(self, space)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT, "n": self.n, "seed": self.seed, "max_points": self.max_points,
            "max_iter": self.max_iter, "perplexity": self.perplexity,
            "perplexity_requested": self.perplexity_requested, "pca_components": dict(self.pca_components),
            "explained_variance": dict(self.explained_variance), "kl_divergence": dict(self.kl_divergence),
            "n_well": int(self.well.sum()), "n_mis": self.n - int(self.well.sum()),
            "indices": self.indices.tolist(), "y": self.y.tolist(), "well": self.well.tolist(),
            "embeddings": {space: self.embedding(space).tolist() for space in SPACES},
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "t-SNE result") -> "TSNEResult":
        """Rebuild a result from :meth:`to_json` output (also the ``tsne.json`` beside the t-SNE figure)."""
        _io.check_result_json(obj, (JSON_FORMAT,), source, "a t-SNE result", JSON_VERSION, _JSON_HINT)
        with _io.rebuilding(source, "t-SNE result", "embed it again"):
            def opt(v: Any, kind: type) -> Any:
                return None if v is None else kind(v)

            emb = obj["embeddings"]
            spaces = {space: torch.tensor(emb[space], dtype=torch.float64).reshape(-1, 2) for space in SPACES}
            n = int(obj["n"])
            result = cls(
                **spaces, indices=torch.tensor([int(i) for i in obj["indices"]], dtype=torch.int64),
                y=torch.tensor([int(c) for c in obj["y"]], dtype=torch.int64),
                well=torch.tensor([bool(x) for x in obj["well"]], dtype=torch.bool),
                perplexity=float(obj["perplexity"]), perplexity_requested=float(obj["perplexity_requested"]),
                seed=int(obj["seed"]), max_points=int(obj["max_points"]), max_iter=int(obj["max_iter"]),
                pca_components={str(k): opt(v, int) for k, v in obj["pca_components"].items()},
                explained_variance={str(k): opt(v, float) for k, v in obj["explained_variance"].items()},
                kl_divergence={str(k): float(v) for k, v in obj["kl_divergence"].items()})
            if any(t.shape[0] != n for t in (*spaces.values(), result.indices, result.y, result.well)):
                raise ValueError(f"expected {n} samples in every embedding and list")
            return result

    @classmethod
    def read_json(cls, path: str | Path) -> "TSNEResult":
        """A result written by :meth:`to_json`, or the ``tsne.json`` of ``failatlas analyze``."""
        obj = _io.read_result_json(path, (JSON_FORMAT,), "t-SNE file", "a t-SNE result", JSON_VERSION, _JSON_HINT)
        return cls.from_json(obj, f"t-SNE file {path}")

    def to_csv(self, path: str | Path) -> Path:
        """One row per embedded sample (columns :data:`CSV_COLUMNS`, floats as ``repr``), atomically."""
        lines = [",".join(CSV_COLUMNS)]
        z, w, s = self.z.tolist(), self.w.tolist(), self.s.tolist()
        for i in range(self.n):
            cells = [str(int(self.indices[i])), str(int(self.y[i])), str(bool(self.well[i])).lower()]
            cells += [repr(float(v)) for v in (*z[i], *w[i], *s[i])]
            lines.append(",".join(cells))
        path = Path(path)
        _io.write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path


_JSON_HINT = "pass the tsne.json of a `failatlas analyze` run, or a file written from TSNEResult.to_json()"


def _check_positive(name: str, value: Any, integer: bool = True) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or \
            (not integer and not math.isfinite(value)):
        raise FailatlasError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


class LatentTSNE:
    """t-SNE of Z, W and S of a population (Fig. 3).

    >>> result = LatentTSNE(max_points=2000, seed=0).embed(population)

    max_points: most samples embedded (a seeded subset beyond); perplexity: t-SNE's (lowered automatically
    for tiny subsets); pca_dims: wider spaces are PCA-reduced to this many dimensions first; max_iter: t-SNE
    iterations (≥ 250, sklearn's minimum).
    """

    def __init__(self, max_points: int = 2000, seed: int = 0, perplexity: float = 30.0, pca_dims: int = 50,
                 max_iter: int = 1000) -> None:
        _check_positive("max_points", max_points)
        _check_positive("perplexity", perplexity, integer=False)
        _check_positive("pca_dims", pca_dims)
        _check_positive("max_iter", max_iter)
        if max_points < MIN_POINTS:
            raise FailatlasError(f"max_points must be at least {MIN_POINTS} for a t-SNE map, got {max_points}")
        if max_iter < 250:
            raise FailatlasError(f"max_iter must be at least 250 (sklearn's minimum), got {max_iter}")
        self.max_points, self.seed, self.perplexity = int(max_points), int(seed), float(perplexity)
        self.pca_dims, self.max_iter = int(pca_dims), int(max_iter)

    def embed(self, population: Population) -> TSNEResult:
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

        if not isinstance(population, Population):
            raise FailatlasError(f"embed() takes a Population, got {type(population).__name__}")
        n = population.n
        if n < MIN_POINTS:
            raise FailatlasError(f"a t-SNE map needs at least {MIN_POINTS} samples, the population has {n}; "
                                 "use a larger --n")
        if n > self.max_points:
            gen = torch.Generator().manual_seed(self.seed)
            indices = torch.randperm(n, generator=gen)[:self.max_points].sort().values
        else:
            indices = torch.arange(n)
        m = int(indices.numel())
        perplexity = self.perplexity if self.perplexity < m else (m - 1) / 3
        embeddings, components, explained, kl = {}, {}, {}, {}
        for space in SPACES:
            x = getattr(population, space)[indices].to(torch.float64).numpy()
            if x.shape[1] > self.pca_dims:
                pca = PCA(n_components=min(self.pca_dims, m), svd_solver="full")
                x = pca.fit_transform(x)
                components[space] = int(pca.n_components_)
                explained[space] = float(pca.explained_variance_ratio_.sum())
            else:
                components[space] = explained[space] = None
            tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
                        max_iter=self.max_iter, random_state=self.seed)
            embeddings[space] = torch.from_numpy(np.ascontiguousarray(tsne.fit_transform(x), dtype=np.float64))
            kl[space] = float(tsne.kl_divergence_)
        return TSNEResult(**embeddings, indices=indices.to(torch.int64), y=population.y[indices].clone(),
                          well=population.well[indices].clone(), perplexity=float(perplexity),
                          perplexity_requested=self.perplexity, seed=self.seed, max_points=self.max_points,
                          max_iter=self.max_iter, pca_components=components, explained_variance=explained,
                          kl_divergence=kl)


def tsne_embeddings(population: Population, max_points: int = 2000, seed: int = 0, perplexity: float = 30.0,
                    pca_dims: int = 50, max_iter: int = 1000) -> TSNEResult:
    """Functional form of :meth:`LatentTSNE.embed`."""
    return LatentTSNE(max_points=max_points, seed=seed, perplexity=perplexity, pca_dims=pca_dims,
                      max_iter=max_iter).embed(population)
