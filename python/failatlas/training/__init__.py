"""Training: classifiers (:mod:`.classifier`); the GAN and quality metrics live in their own modules."""

from .classifier import (
    EpochStats,
    TrainClassifierConfig,
    TrainClassifierResult,
    evaluate_classifier,
    format_evaluation,
    train_classifier,
)

__all__ = ["EpochStats", "TrainClassifierConfig", "TrainClassifierResult", "evaluate_classifier",
           "format_evaluation", "train_classifier"]
