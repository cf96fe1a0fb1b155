"""The prediction log as the server writes it: off the hot path, durable.

Owns: the writer (``writer``) and its write-ahead journal (``journal``); the files'
layout is ``framework.logs.layout``'s, shared with the reader.

May import: ``framework`` (never ``framework.cli``). Never gRPC or the data plane.
"""
