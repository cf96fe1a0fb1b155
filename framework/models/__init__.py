"""Models: from a spec and labels to a fitted, evaluated, explainable version.

Owns: the model spec (``spec``, ``spec_reference``), labels and splits (``labels``,
``label_query``), the estimator (``estimator``), training (``training``), the fallback
model (``fallback``), holdout evaluation (``evaluation``), the manifest (``manifest``)
and lineage (``lineage``), reference statistics (``reference_stats``), the compiled
scorer (``compiled``), explanations (``explain``) and batch scoring (``batch_score``).

May import: ``framework.errors``, ``framework.duck``, ``framework.features``,
``framework.registry``, ``framework.logs``, ``framework.spark``, ``framework.progress``.
"""
