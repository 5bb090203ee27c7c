"""Replication between node.sqlite, the tenant files, the key store and the central PostgreSQL:
download checkpoints, the change feed (read from the server, its hot standby, or shard by shard
on a Citus cluster's workers), the replicated-table protocol, each table's central SQL,
and the sync round.

Imports sync.postgres and the edge concepts whose rows it moves (tenants, rating, crypto).
"""
