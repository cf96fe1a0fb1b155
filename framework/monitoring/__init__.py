"""Monitoring: what the prediction log says about a model in production.

Owns: the summary (``summary``) and its typed result (``results``), built from
operations (``operations``), drift from the log (``log_drift``, with the tests
in ``drift``) and live quality (``live_quality``); alerts (``alerts``) and their
thresholds (``thresholds``); training-serving skew (``skew``); the outputs: the
HTML report (``report``) and Prometheus gauges (``prometheus``); and the one
place it reads a version's manifest (``version_manifest``).

May import: ``framework.errors``, ``framework.duck``, ``framework.features``,
``framework.models``, ``framework.registry``, ``framework.logs``, ``framework.spark``,
``framework.progress``.
"""
