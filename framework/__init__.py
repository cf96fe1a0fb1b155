"""parity: define features once, train on them and serve them in parity.

The public Python API. Everything else in ``framework`` is an implementation
detail and may change.
"""

from framework.errors import ConfigError, DataError, FeatureStoreError, ParityError
from framework.feature_pipeline import build_offline_sources
from framework.repository import Profile, apply, load_store, open_store
from framework.sample_data import GenerationConfig, generate

__all__ = [
    "ConfigError",
    "DataError",
    "FeatureStoreError",
    "GenerationConfig",
    "ParityError",
    "Profile",
    "apply",
    "build_offline_sources",
    "generate",
    "load_store",
    "open_store",
]
