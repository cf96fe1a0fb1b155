"""The feature side of the loop: the Feast repository and what parity reads from it.

Owns: finding and opening the repository and its state (``repository``), the
definitions a model pins (``definitions``), how DuckDB reads a view's offline
source (``view_sources``, ``sql_paths``), point-in-time-correct training sets
(``entity_frame``, ``training_set``, ``fingerprint``), on-demand views
(``on_demand``) and online feature vectors with the offline join's semantics
(``online``).

May import: ``framework.errors``, ``framework.duck``, ``framework.registry`` (the
registry's cache is installed on the store it opens) and Feast.
"""
