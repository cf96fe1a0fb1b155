"""Materialisation: feature values from the offline store into the online store.

Owns: the job (``job``) and its writing while the next batch is prepared
(``pump``), the latest row per key read by DuckDB (``latest_rows``), Feast's online
byte formats (``online_encoding``), bulk writes into each online store
(``online_write`` chooses a writer: ``writer`` is their interface, ``sqlite_writer``
and ``redis_writer`` the two stores) and freshness (``freshness``); it reports to
:class:`framework.progress.Progress`.

May import: ``framework.errors``, ``framework.feast_private``, ``framework.duck``,
``framework.features``, ``framework.progress``.
"""
