"""The shipped fraud scenario: sample data and its feature pipeline. Not the library.

Owns: the deterministic generator (``data``) and the pipeline that turns its raw
tables into the sample repository's offline sources (``pipeline``).

May import: ``framework.errors``, ``framework.duck``.
"""
