"""The ``parity`` command line: the only part of ``framework`` that imports ``serving``.

Owns: the parser and dispatch (``main``), one module per command group
(``init``, ``models``, ``monitor``, ``feedback``, ``retrain``, ``serve``) and the
demo (``demo``, ``demo_loop``).

May import: everything in ``framework`` and ``serving``.
"""
