"""Which central database holds a tenant: a stable hash of its id, modulo the number of DSNs.

`shard_for(tenant_id, n)` is the first 8 bytes of SHA-256 over the tenant id's canonical text
(lower-case UUID), read as a big-endian unsigned integer, modulo n. It depends on nothing but
the id and the length of `central.dsns`, so every edge node maps every tenant to the same shard
without asking anyone. Changing the list (adding, removing or reordering DSNs) moves tenants to
other shards: their rows must be copied there first (see docs/sync.md, "Sharding").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def shard_for(tenant_id: str, shard_count: int) -> int:
    """The index into `central.dsns` of the database holding `tenant_id`."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    digest = hashlib.sha256(tenant_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


def tenants_of_shard(tenant_ids: Iterable[str], shard: int, shard_count: int) -> list[str]:
    """The ids among `tenant_ids` that live on `shard`, in their given order."""
    return [t for t in tenant_ids if shard_for(t, shard_count) == shard]
