"""Models: from a spec and labels to a fitted, evaluated, explainable version.

Owns: the model spec (``spec``, ``spec_reference``), labels and splits (``labels``),
the estimator (``estimator``), training (``training``), holdout evaluation
(``evaluation``), reference statistics (``reference_stats``), the compiled scorer
(``compiled``), explanations (``explain``) and batch scoring (``batch_score``).

May import: ``framework.errors``, ``framework.duck``, ``framework.features``,
``framework.registry``, ``framework.logs``.
"""
