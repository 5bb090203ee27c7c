"""Migration 0003: the central database itself refuses an un-revoke, a hard delete and a
changed hash of an API key, on a real PostgreSQL; the edges' own uploads still pass."""

from __future__ import annotations

import pytest

from edge_node.clock import now_us
from edge_node.errors import PermanentSyncError
from sync.postgres import Connection, translated
from tests.sync.conftest import EdgeFactory

OTHER_HASH = "f" * 64


async def _revoked_key(make_edge: EdgeFactory, central: str) -> str:
    edge = make_edge("edge-a")
    _tenant, key = edge.registry.create_tenant("acme")
    edge.registry.revoke_key(key.key_id)
    await edge.sync(central)
    return key.key_id


class TestCentralRegistryRules:
    async def test_a_revoked_key_cannot_be_un_revoked(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Clearing revoked_at, or moving it later, is refused with a message naming the key."""
        key_id = await _revoked_key(make_edge, central)
        for statement in (
            "UPDATE api_keys SET revoked_at = NULL",
            "UPDATE api_keys SET revoked_at = revoked_at + 1",
        ):
            with (
                pytest.raises(PermanentSyncError, match=f"{key_id}.*cannot be un-revoked"),
                translated(),
            ):
                await db.execute(statement)
        assert await db.fetchval("SELECT revoked_at IS NOT NULL FROM api_keys") is True

    async def test_a_revocation_may_move_earlier(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """An earlier revoked_at is accepted: it is what the edges' upload does."""
        await _revoked_key(make_edge, central)
        assert await db.execute("UPDATE api_keys SET revoked_at = revoked_at - 1") == "UPDATE 1"

    async def test_a_key_cannot_be_deleted_or_truncated(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """DELETE and TRUNCATE of api_keys are refused, pointing at revocation instead."""
        key_id = await _revoked_key(make_edge, central)
        with pytest.raises(PermanentSyncError, match=f"{key_id}.*cannot be deleted"), translated():
            await db.execute("DELETE FROM api_keys")
        with pytest.raises(PermanentSyncError, match="cannot be truncated"), translated():
            await db.execute("TRUNCATE api_keys")
        assert await db.fetchval("SELECT count(*) FROM api_keys") == 1

    async def test_a_key_hash_or_identity_cannot_change(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """A new key_hash, or a key moved to another key id, is refused."""
        key_id = await _revoked_key(make_edge, central)
        with (
            pytest.raises(PermanentSyncError, match=f"hash of API key {key_id} .*cannot change"),
            translated(),
        ):
            await db.execute("UPDATE api_keys SET key_hash = $1", OTHER_HASH)
        with pytest.raises(PermanentSyncError, match="cannot move"), translated():
            await db.execute("UPDATE api_keys SET key_id = '0123456789abcdef'")

    async def test_edges_still_revoke_and_the_other_columns_still_change(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """An edge's revocation uploads through the triggers, and a role change centrally
        still reaches the edge."""
        edge = make_edge("edge-a")
        _tenant, key = edge.registry.create_tenant("acme")
        await edge.sync(central)
        await db.execute("UPDATE api_keys SET role = 'reader'")
        edge.registry.revoke_key(key.key_id)
        before = now_us()
        await edge.sync(central)
        revoked_at = await db.fetchval("SELECT revoked_at FROM api_keys")
        assert revoked_at is not None
        assert revoked_at <= before
        assert edge.registry.lookup_key(key.api_key) is None
