"""parity: define features once, train on them and serve them in parity.

The public Python API. Everything else in ``framework`` is an implementation
detail and may change.
"""

from framework.errors import ConfigError, DataError, FeatureStoreError, ParityError
from framework.feature_pipeline import build_offline_sources
from framework.labels import entity_frame_from_labels, time_split
from framework.repository import Profile, apply, load_store, open_store
from framework.sample_data import GenerationConfig, generate
from framework.training_set import (
    TrainingSetInfo,
    build_training_set,
    read_info,
    write_training_set,
)

__all__ = [
    "ConfigError",
    "DataError",
    "FeatureStoreError",
    "GenerationConfig",
    "ParityError",
    "Profile",
    "TrainingSetInfo",
    "apply",
    "build_offline_sources",
    "build_training_set",
    "entity_frame_from_labels",
    "generate",
    "load_store",
    "open_store",
    "read_info",
    "time_split",
    "write_training_set",
]
