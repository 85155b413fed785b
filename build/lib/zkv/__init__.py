"""zkv: a replicated, multi-master, in-memory key-value store.

A node is two processes: the frontend (``zkv.frontend``) serves clients over TCP, the store
(``zkv.store``) owns the data, its write-ahead log and replication over ZeroMQ.
"""

__version__ = "0.1.0"
