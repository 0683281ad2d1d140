"""Person re-identification: features from peers, distances, ranking metrics."""

from keras_dml.reid.evaluation import (
    RankingResult,
    evaluate_features,
    evaluate_ranking,
    pairwise_distance,
)
from keras_dml.reid.features import ReidFeatures, extract_features

__all__ = [
    "RankingResult",
    "ReidFeatures",
    "evaluate_features",
    "evaluate_ranking",
    "extract_features",
    "pairwise_distance",
]
