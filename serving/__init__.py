"""parity's prediction server.

Packages: ``dataplane`` (transport-free prediction), ``log`` (the prediction log's
writer), ``grpc`` (the transport, the server process and the client) and ``http``
(the Open Inference Protocol's HTTP/REST binding, answering through ``grpc``'s
servicer); ``stubs`` holds the generated protobuf code.

May import: ``framework`` (never ``framework.cli``).
"""
