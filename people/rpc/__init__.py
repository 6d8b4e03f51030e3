"""A hardened gRPC runtime on grpclib, reusable for any service.

It knows nothing of users: connections (handshake and idle timeouts, a cap,
GOAWAY drain), calls (size limits, cardinality, a concurrency cap, the access
log), strict request decoding, token auth and TLS. The people service plugs
into it in :mod:`people.api`; the server process assembles both in
:mod:`people.server`.
"""
