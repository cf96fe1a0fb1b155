"""The data plane: from entity keys and request data to decisions, with no transport.

Owns: the predictor (``predictor``) with its request and answer types and input
checks (``messages``), scoring and fallbacks (``scoring``), explanations
(``explanations``) and the prediction log's rows (``log_rows``); the model versions
it holds (``versions``); routing and checks (``routing``); micro-batching
(``batching``); and its errors (``errors``).

May import: ``framework`` (never ``framework.cli``). Never gRPC, protobuf or
``serving.grpc``: a transport is a thin translation over this package.
"""
