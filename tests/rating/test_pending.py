"""The index of tenants with pending uploads: every tenant whose outbox is not empty is listed,
whichever process wrote it, and the index is rebuilt from the tenant files when missing."""

from __future__ import annotations

import uuid
from pathlib import Path

from edge_node.rating.model import RatingInput
from edge_node.rating.pending import FILE_NAME
from edge_node.rating.store import TenantStores


def _stores(tmp_path: Path) -> TenantStores:
    return TenantStores(tmp_path / "tenants", node_id="edge-a")


class TestPendingUploads:
    def test_a_write_lists_its_tenant_and_an_emptied_outbox_unlists_it(
        self, tmp_path: Path
    ) -> None:
        """A rating write lists the tenant; acknowledging its whole outbox unlists it, and an
        idle tenant is never listed."""
        stores = _stores(tmp_path)
        busy, idle = str(uuid.uuid4()), str(uuid.uuid4())
        stores.get(idle)
        stores.get(busy).upsert(RatingInput("u1", "book", 4, None))
        assert stores.pending_tenants() == [busy]
        _, seq = stores.get(busy).pending_changes(100)
        stores.get(busy).acknowledge_uploaded(seq)
        assert stores.pending_tenants() == []
        stores.close()

    def test_deletes_and_erasures_list_the_tenant_too(self, tmp_path: Path) -> None:
        """A delete and a user erasure record outbox entries, so they list the tenant."""
        stores = _stores(tmp_path)
        t = str(uuid.uuid4())
        rating, _ = stores.get(t).upsert(RatingInput("u1", "book", 4, None))
        for action in (
            lambda: stores.get(t).delete(rating.id),
            lambda: stores.get(t).erase_user("u1"),
        ):
            _, seq = stores.get(t).pending_changes(100)
            stores.get(t).acknowledge_uploaded(seq)
            assert stores.pending_tenants() == []
            stores.get(t).upsert(RatingInput("u1", "book", 3, None))
            _, seq = stores.get(t).pending_changes(100)
            stores.get(t).acknowledge_uploaded(seq)
            action()
            assert stores.pending_tenants() == [t]
        stores.close()

    def test_a_write_by_another_process_is_listed(self, tmp_path: Path) -> None:
        """A second TenantStores on the same directory (another worker process) lists what it
        writes where the first one's sync worker looks, even after the first emptied it."""
        syncing, serving = _stores(tmp_path), _stores(tmp_path)
        t = str(uuid.uuid4())
        serving.get(t).upsert(RatingInput("u1", "book", 4, None))
        _, seq = syncing.get(t).pending_changes(100)
        syncing.get(t).acknowledge_uploaded(seq)
        assert syncing.pending_tenants() == []
        serving.get(t).upsert(RatingInput("u2", "book", 5, None))
        assert syncing.pending_tenants() == [t]
        syncing.close()
        serving.close()

    def test_a_missing_index_is_rebuilt_from_the_tenant_files(self, tmp_path: Path) -> None:
        """Outboxes written before the index existed (or with it deleted) are found on open."""
        stores = _stores(tmp_path)
        busy, idle = str(uuid.uuid4()), str(uuid.uuid4())
        stores.get(busy).upsert(RatingInput("u1", "book", 4, None))
        stores.get(idle)
        stores.close()
        (tmp_path / "tenants" / FILE_NAME).unlink()
        reopened = _stores(tmp_path)
        assert reopened.pending_tenants() == [busy]
        reopened.close()
