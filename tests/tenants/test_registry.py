"""The registry's sync side: an outbox of local creations and revocations, and rows from the
central database applied with the central row winning and revocations kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from edge_node.tenants.apikeys import hash_key, new_api_key
from edge_node.tenants.model import KeyRecord, TenantRecord
from edge_node.tenants.registry import TenantRegistry


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[TenantRegistry]:
    opened = TenantRegistry.open(tmp_path)
    yield opened
    opened.close()


class TestOutbox:
    def test_creations_and_revocations_are_queued_in_order(self, registry: TenantRegistry) -> None:
        """A tenant with its first key, a second key, then a revocation: the tenant row and
        each key are queued once, in their current state, oldest first."""
        tenant, first = registry.create_tenant("acme")
        second = registry.create_key(tenant.tenant_id, "reader")
        registry.revoke_key(first.key_id)
        changes = registry.pending_uploads()
        assert [(c.tenant.tenant_id, c.key and c.key.key_id) for c in changes] == [
            (tenant.tenant_id, None),
            (tenant.tenant_id, second.key_id),
            (tenant.tenant_id, first.key_id),
        ]
        revoked = changes[-1].key
        assert revoked is not None
        assert revoked.revoked_at is not None
        assert revoked.key_hash == hash_key(first.api_key)

    def test_a_change_made_after_reading_survives_the_acknowledgement(
        self, registry: TenantRegistry
    ) -> None:
        """Acknowledging what was uploaded keeps a revocation recorded in the meantime."""
        _, key = registry.create_tenant("acme")
        uploaded = registry.pending_uploads()
        registry.revoke_key(key.key_id)
        registry.acknowledge_uploads(uploaded)
        [left] = registry.pending_uploads()
        assert left.key is not None
        assert left.key.revoked_at is not None

    def test_status_changes_are_not_queued(self, registry: TenantRegistry) -> None:
        """The central row decides a tenant's status: a local suspension is not uploaded."""
        tenant, _ = registry.create_tenant("acme")
        registry.acknowledge_uploads(registry.pending_uploads())
        registry.set_status(tenant.tenant_id, "suspended")
        assert registry.pending_uploads() == []


class TestApplyRemote:
    def test_the_central_tenant_row_wins_and_is_not_queued_back(
        self, registry: TenantRegistry
    ) -> None:
        """A central row replaces the local one whole, and nothing is queued for upload."""
        tenant, _ = registry.create_tenant("acme")
        registry.acknowledge_uploads(registry.pending_uploads())
        central = TenantRecord(tenant.tenant_id, "Acme Inc", "suspended", "flat", 10, "cus_1", 1, 2)
        assert registry.apply_remote([central], [], checkpoint=("c", "v1")) == 1
        local = registry.get_tenant(tenant.tenant_id)
        assert local is not None
        assert (local.name, local.status, local.plan, local.rate_limit_per_minute) == (
            "Acme Inc",
            "suspended",
            "flat",
            10,
        )
        assert registry.pending_uploads() == []
        assert registry.sync_checkpoint("c") == "v1"
        assert registry.apply_remote([central], []) == 0  # the same row again changes nothing

    def test_a_revocation_is_never_undone_and_the_earliest_wins(
        self, registry: TenantRegistry
    ) -> None:
        """A key revoked here stays revoked when the central row says otherwise; between two
        revocation times the earlier is kept."""
        _tenant, key = registry.create_tenant("acme")
        registry.revoke_key(key.key_id)
        [record] = [c.key for c in registry.pending_uploads() if c.key is not None]
        assert record is not None
        assert record.revoked_at is not None
        registry.apply_remote([], [replace(record, revoked_at=None)])
        assert registry.lookup_key(key.api_key) is None
        registry.apply_remote([], [replace(record, revoked_at=record.revoked_at - 5)])
        [again] = [c.key for c in registry.pending_uploads() if c.key is not None]
        assert again is not None
        assert again.revoked_at == record.revoked_at - 5

    def test_a_key_of_an_unknown_tenant_arrives_with_it(self, registry: TenantRegistry) -> None:
        """A key is applied together with its tenant and then grants access."""
        tenant = TenantRecord(
            "0b7e6a4c-1111-4c55-9a53-5c1e0e8b7d41", "c", "active", "payg", None, None, 1, 1
        )
        api_key = new_api_key("00112233445566aa")
        key = KeyRecord("00112233445566aa", tenant.tenant_id, hash_key(api_key), "writer", 1, None)
        assert registry.apply_remote([tenant], [key]) == 2
        grant = registry.lookup_key(api_key)
        assert grant is not None
        assert (grant.tenant_id, grant.role) == (tenant.tenant_id, "writer")
