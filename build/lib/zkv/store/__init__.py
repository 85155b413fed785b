"""The store process: the keyspace, its write-ahead log and snapshots, and replication."""
