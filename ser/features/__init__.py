"""Hand features (the seed's ZCR + RMS + MFCC vectors), augmentation, cached extraction."""

from ser.features.augment import VERSIONS, AugmentConfig, make_versions
from ser.features.extract import FeatureSpec, FeatureTable, featurise
from ser.features.hand import HandFeatureConfig, feature_dim, hand_features

__all__ = [
    "VERSIONS",
    "AugmentConfig",
    "FeatureSpec",
    "FeatureTable",
    "HandFeatureConfig",
    "feature_dim",
    "featurise",
    "hand_features",
    "make_versions",
]
