"""parity's prediction server.

Packages: ``dataplane`` (transport-free prediction), ``log`` (the prediction log's
writer) and ``grpc`` (the transport, the server process and the client);
``stubs`` holds the generated protobuf code.

May import: ``framework`` (never ``framework.cli``).
"""
