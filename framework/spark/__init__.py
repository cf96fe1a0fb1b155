"""The offline half on Apache Spark: the ``spark`` profile.

A repository opened with ``--profile spark`` (``feature_store.spark.yaml``, Feast's
Spark offline store) runs its offline work on Spark with the DuckDB path's
semantics: point-in-time training sets (:mod:`framework.spark.training_set`),
materialisation into the online store (:mod:`framework.spark.materialize`) and
batch scoring (:mod:`framework.spark.score`). The session comes from the
profile's ``spark_conf`` (:mod:`framework.spark.session`).

PySpark is an optional extra (``pip install 'parity[spark]'``); nothing here is
imported on the embedded default.

May import: ``framework.errors``, ``framework.duck``, ``framework.features``,
``framework.registry``, ``framework.materialize``, ``framework.progress``.
"""
