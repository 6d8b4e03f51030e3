"""The directory itself: users, their rules, the use cases and the storage port.

Nothing here knows gRPC, SQL or the network: requests arrive as plain values,
results leave as :class:`people.domain.model.User`, failures are
:mod:`people.domain.errors`, and storage is whatever implements
:class:`people.domain.ports.UserStore`.
"""
