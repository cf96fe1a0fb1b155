"""Monitoring: what the prediction log says about a model in production.

Owns: the summary and alerts (``summary``), data drift (``drift``),
training-serving skew (``skew``) and the HTML report (``report``).

May import: ``framework.errors``, ``framework.duck``, ``framework.features``,
``framework.models``, ``framework.registry``, ``framework.logs``.
"""
