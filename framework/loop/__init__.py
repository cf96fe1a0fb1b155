"""Closing the loop: ground truth, retraining and promotion.

Owns: outcomes joined to predictions and live quality (``feedback``), the gated
challenger (``retrain``), promotion and rollback (``promotion``).

May import: every stage below it (``features``, ``models``, ``registry``, ``spark``,
``logs``, ``monitoring``), never ``framework.cli`` or ``serving``.
"""
