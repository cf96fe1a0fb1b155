"""The feature side of the loop: the Feast repository and what parity reads from it.

Owns: finding and opening the repository and its state (``repository``); a model
input as parity pins it (``fields``) and whether a version's pinned definitions
still match Feast (``pinned``); what a feature service resolves to and how to join
it (``join_plan``); how DuckDB reads a view's offline source (``view_sources``,
``sql_paths``); point-in-time-correct training sets (``entity_frame``,
``training_set``, with their metadata in ``training_file`` and ``fingerprint``);
on-demand views (``on_demand``); online feature vectors with the offline join's
semantics (``online``), read through Feast or directly from Feast's SQLite and
Redis layouts (``online_read``, ``online_sqlite``, ``online_redis``, with
``online_views``, ``online_keys`` and ``online_values``).

May import: ``framework.errors``, ``framework.duck``, ``framework.feast_private``,
``framework.progress``, ``framework.registry`` (the registry's cache is installed on
the store it opens) and Feast.
"""
