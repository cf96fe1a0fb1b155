"""A model input as parity pins it: its name, its Feast type and the view it comes from.

Which Feast types parity takes as inputs is one table here: integers, floats and Bool
(as 0/1) are numbers, String is a category; :mod:`framework.models.estimator` says why
every other type is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Feast types (``str(feast_type)``) the pipeline takes as numbers; Bool becomes 0.0/1.0.
NUMERICAL_DTYPES = frozenset({"Int32", "Int64", "Float32", "Float64", "Bool"})
#: Feast types the pipeline one-hot encodes as categories.
CATEGORICAL_DTYPES = frozenset({"String"})


@dataclass(frozen=True)
class FeatureField:
    """One model input: output name, Feast type, and the view it comes from."""

    name: str
    dtype: str
    view: str

    @property
    def categorical(self) -> bool:
        return self.dtype in CATEGORICAL_DTYPES

    @property
    def accepted(self) -> bool:
        """Whether the pipeline can take this feature (see :data:`NUMERICAL_DTYPES`)."""
        return self.dtype in NUMERICAL_DTYPES or self.dtype in CATEGORICAL_DTYPES
