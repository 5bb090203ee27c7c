"""Ratings: users rate items 1 to 5 within a tenant; per-item scores are kept as they change.

`model` is the domain (values and their validation, no I/O), `store` the per-tenant SQLite
files (one is a `tenant_store`, with its `replication` side, its `read_memory` of answers and
its `row_documents`), `handlers` the HTTP routes under /v1/tenants/{tenant_id}/.
"""
