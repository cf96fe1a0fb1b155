"""The public API is exactly what ``framework.__all__`` claims."""

import framework


def test_public_api() -> None:
    assert sorted(framework.__all__) == [
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
    for name in framework.__all__:
        assert getattr(framework, name) is not None
    public = {n for n in vars(framework) if not n.startswith("_")}
    # Submodules are importable, but every other public name is listed.
    modules = {n for n in public if type(getattr(framework, n)).__name__ == "module"}
    assert public - modules == set(framework.__all__)
