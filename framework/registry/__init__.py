"""The model registry: immutable versions, their artifacts and manifests, aliases, history.

Owns: the registry (``model_registry``), artifacts checked by hash (``artifact``)
and the SQL registry's cache (``cache``).

May import: ``framework.errors`` only: every other stage stands on it.
"""
