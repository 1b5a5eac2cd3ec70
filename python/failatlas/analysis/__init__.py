"""The analyses of DESIGN §4: each a class built from the models with one verb method returning a frozen
dataclass that serializes to JSON/CSV, and a functional twin.

* :func:`sample_population` → :class:`Population` (z, w, s, logits, p_y, well-classified flags);
* :class:`GradientRanking` ``.rank(population)`` → :class:`Ranking` (twin :func:`rank_dimensions`);
* :class:`Separation` ``(population).compute()`` → :class:`SeparationResult` (twin :func:`separation`);
* :func:`run_rank`: the ``failatlas rank`` job (all of the above, written to a folder).
"""

from .population import Population, sample_population
from .ranking import GradientRanking, RankedDim, Ranking, RankRun, rank_dimensions, run_rank, style_gradients
from .separation import Separation, SeparationResult, auroc, histograms, ks_statistic, separation

__all__ = [
    "GradientRanking", "Population", "RankRun", "RankedDim", "Ranking", "Separation", "SeparationResult",
    "auroc", "histograms", "ks_statistic", "rank_dimensions", "run_rank", "sample_population", "separation",
    "style_gradients",
]
