"""The shipped fraud scenario: sample data and its feature pipeline. Not the library.

Owns: the deterministic generator (``data``: what it writes; ``scenario``: the
world's parameters and :class:`GenerationConfig`; ``world``: users and merchants;
``transactions``: spending, compromised cards and hidden fraud labels) and the
pipeline that turns its raw tables into the sample repository's offline sources
(``pipeline``).

May import: ``framework.errors``, ``framework.duck``, ``framework.progress``.
"""
