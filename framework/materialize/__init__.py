"""Materialisation: feature values from the offline store into the online store.

Owns: the job (``job``), the latest row per key read by DuckDB (``latest_rows``),
Feast's online byte formats (``online_encoding``), bulk writes into each online
store (``online_write``), freshness (``freshness``) and progress (``progress``).

May import: ``framework.errors``, ``framework.duck``, ``framework.features``.
"""
