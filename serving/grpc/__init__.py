"""The gRPC transport: the server process around the data plane.

Owns: the server's settings (``settings``) and start-up (``server``), the
servicers (``servicers``), protobuf conversions (``converters``), the
error-to-status table (``status``), TLS, tokens and rate limits (``security``),
Prometheus metrics (``metrics``) and the Python client (``client``).

May import: ``framework`` (never ``framework.cli``), ``serving.dataplane``,
``serving.log``, ``serving.stubs``, and ``serving.http.server`` (the server starts the
HTTP listener beside gRPC).
"""
