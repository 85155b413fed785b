"""Replication: the backlog that answers catch-up requests, the in-order inbox, the wire verbs."""
