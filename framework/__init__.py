"""parity: define features once, train on them and serve them in parity.

The public Python API. Everything else in ``framework`` is an implementation
detail and may change.
"""

import os

# scikit-learn's OpenMP runtime (libgomp) spins while waiting at its barriers by default;
# on a machine where another process holds a core (a server, a second job), a
# gradient-boosting fit then runs 10-20x slower. Sleeping waits cost ~nothing when the
# machine is idle. It must be set before sklearn loads libgomp; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from framework.errors import ConfigError, DataError, FeatureStoreError, ParityError
from framework.features.join_plan import feature_contract
from framework.features.repository import Profile, apply, load_store, open_store
from framework.features.training_file import TrainingSetInfo, read_info
from framework.features.training_set import build_training_set, write_training_set
from framework.loop.promotion import PromotionRefused, promote, rollback
from framework.models.labels import entity_frame_from_labels, time_split
from framework.models.spec import ModelSpec, load_spec
from framework.models.training import TrainResult, train_model
from framework.registry.artifact import ArtifactError  # noqa: E402
from framework.registry.model_registry import ModelRef, ModelRegistry
from framework.sample.data import generate
from framework.sample.pipeline import build_offline_sources
from framework.sample.scenario import GenerationConfig

__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "FeatureStoreError",
    "GenerationConfig",
    "ModelRef",
    "ModelRegistry",
    "ModelSpec",
    "ParityError",
    "Profile",
    "PromotionRefused",
    "TrainResult",
    "TrainingSetInfo",
    "apply",
    "build_offline_sources",
    "build_training_set",
    "entity_frame_from_labels",
    "feature_contract",
    "generate",
    "load_spec",
    "load_store",
    "open_store",
    "promote",
    "read_info",
    "rollback",
    "time_split",
    "train_model",
    "write_training_set",
]
