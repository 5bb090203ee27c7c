"""The central PostgreSQL's schema: numbered SQL migrations, database roles bound to tenants,
and fleet-key rotation of the central data keys.

Imports sync.postgres and the edge foundations.
"""
