"""Deleting a tenant for good, on this node: crypto-shredding.

Deleting a tenant is crypto-shredding: its data keys are destroyed first (the point of no
return: from then on no copy of its comments opens, wherever it is), then its rating file
and its registry rows are removed. Each step is idempotent, so a deletion interrupted by a
crash is finished by running it again; the deletion is remembered in the key store, and the
sync worker carries it to the central registry and from there to every other node.
"""

from __future__ import annotations

from typing import Any

from edge_node.rating.store import TenantStores
from edge_node.tenants.registry import TenantRegistry


def delete_tenant(registry: TenantRegistry, stores: TenantStores, tenant_id: str) -> dict[str, Any]:
    """Shred the tenant's data keys, then remove its rating file and registry rows."""
    keys_destroyed = stores.keyring.shred(tenant_id)
    file_removed = stores.drop(tenant_id)
    registry_removed = registry.delete_tenant_rows(tenant_id)
    return {
        "tenant_id": tenant_id,
        "data_keys_destroyed": keys_destroyed,
        "rating_file_removed": file_removed,
        "registry_rows_removed": registry_removed,
    }
