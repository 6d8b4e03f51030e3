"""people's gRPC face: ``people.UserService`` on the :mod:`people.rpc` runtime.

The only place where the domain meets the wire: the servicer converts messages
to domain calls and back, read answers are encoded with upb and cached per
store change, and one table maps domain errors to status codes.
"""
