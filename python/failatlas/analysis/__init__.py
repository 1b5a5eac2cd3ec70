"""The analyses of DESIGN §4: each a class built from the models with one verb method returning a frozen
dataclass that serializes to JSON/CSV, and a functional twin.

* :func:`sample_population` → :class:`Population` (z, w, s, logits, p_y, well-classified flags);
* :class:`GradientRanking` ``.rank(population)`` → :class:`Ranking` (twin :func:`rank_dimensions`);
* :class:`Separation` ``(population).compute()`` → :class:`SeparationResult` (twin :func:`separation`);
* :class:`LatentTSNE` ``.embed(population)`` → :class:`TSNEResult` (twin :func:`tsne_embeddings`);
* :class:`CornerCaseSearch` ``.search(population)`` → :class:`CornerCases` (twin :func:`find_corner_cases`;
  the authors' stepping procedure: :func:`authors_corner_search`);
* :class:`CornerMargins` ``.compute(population)`` → :class:`MarginResult` (beyond DESIGN: the corner search
  from many well-classified samples, the quantiles of their shifts);
* :func:`manipulation_grid` → :class:`ManipulationGrid` (Fig. 5);
* :class:`AccuracyCurve` ``.compute(population)`` → :class:`CurveResult` (twin :func:`accuracy_curve`;
  :func:`with_classifier` re-labels a population, :func:`classifier_curves` does several classifiers;
  :func:`read_curves` reads every classifier's curve of an analyze run's ``curves.json``);
* :class:`ClassDirections` ``.compare(ranking)`` → :class:`ClassOverlap` (twin :func:`class_overlap`);
* :class:`FailureDirection` ``(G, population).fit()`` → :class:`FailureDirectionResult` (beyond DESIGN: the
  one direction of W that separates the mis-classified samples; :func:`walk_failure_direction` renders it);
* :func:`compare_classifiers` → :class:`Comparison` (several classifiers on one population; :func:`run_compare`
  is the ``failatlas compare`` job); :func:`rank_any`: the gradient ranking, or the black-box one for a
  classifier without gradients;
* reading a run folder back: ``Ranking.read_json``, ``CurveResult.read_json`` (:func:`read_curves` for an
  analyze run's ``curves.json``), ``CornerCases.read_json``, ``TSNEResult.read_json``,
  ``ClassOverlap.read_json``, ``FailureDirectionResult.read_json``, ``Comparison.read_json``,
  ``MarginResult.read_json``,
  ``SeparationResult.read_json`` (a file written from its ``to_json``) give the result that was written,
  field for field; :meth:`Population.from_npz` the population;
* :func:`run_rank`: the ``failatlas rank`` job; :func:`run_analysis` (:class:`AnalysisOptions` →
  :class:`AnalysisRun`): the ``failatlas analyze`` job, every analysis written to one run folder;
  :func:`verify_run` (→ :class:`RunCheck`): the ``failatlas verify`` check of a run folder against its
  manifest, and optionally of a rerun against it.
"""

from .compare import Comparison, compare_classifiers, run_compare
from .corners import CornerCase, CornerCases, CornerCaseSearch, authors_corner_search, find_corner_cases
from .curves import AccuracyCurve, CurveResult, accuracy_curve, classifier_curves, read_curves, with_classifier
from .direction import DirectionWalk, FailureDirection, FailureDirectionResult, walk_failure_direction
from .manipulation import ManipulationGrid, manipulation_grid
from .margins import CornerMargins, MarginResult
from .overlap import ClassDirections, ClassOverlap, SharedDim, class_overlap, jaccard
from .pipeline import AnalysisOptions, AnalysisRun, AnalysisShard, real_accuracy, run_analysis
from .population import Population, sample_population
from .ranking import (BlackBoxRanking, GradientRanking, RankedDim, Ranking, RankRun, rank_any, rank_dimensions,
                      run_rank, style_gradients)
from .separation import Separation, SeparationResult, auroc, histograms, ks_statistic, separation
from .tsne import LatentTSNE, TSNEResult, tsne_embeddings
from .verify import RunCheck, verify_run

__all__ = [
    "AccuracyCurve", "AnalysisOptions", "AnalysisRun", "AnalysisShard", "BlackBoxRanking", "ClassDirections",
    "ClassOverlap", "Comparison", "CornerCase",
    "CornerCaseSearch", "CornerCases", "CornerMargins", "CurveResult", "DirectionWalk", "FailureDirection",
    "FailureDirectionResult",
    "GradientRanking", "LatentTSNE", "ManipulationGrid", "MarginResult",
    "Population", "RankRun", "RankedDim", "Ranking", "RunCheck", "Separation", "SeparationResult", "SharedDim",
    "TSNEResult",
    "accuracy_curve", "auroc", "authors_corner_search", "class_overlap", "classifier_curves",
    "compare_classifiers", "find_corner_cases", "histograms", "jaccard", "ks_statistic", "manipulation_grid",
    "rank_any", "rank_dimensions", "read_curves", "real_accuracy", "run_analysis", "run_compare", "run_rank",
    "sample_population", "separation", "style_gradients", "tsne_embeddings", "verify_run", "walk_failure_direction",
    "with_classifier",
]
