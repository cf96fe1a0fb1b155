"""The Open Inference Protocol over HTTP/REST (KServe V2's paths), beside gRPC.

Owns: the REST bodies <-> the protocol's messages (``codec``), the routes, answering
through the gRPC binding's servicer and guard (``app``), and the listener, uvicorn on a
thread of the serving process (``server``).

May import: ``framework`` (never ``framework.cli``), ``serving.dataplane``,
``serving.grpc`` (never ``serving.grpc.server``, which starts this), ``serving.stubs``.
"""
