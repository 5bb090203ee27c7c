"""Fleet-key rotation (`edge-node keys rotate-fleet`): comments stay readable across the fleet
through it, and once the old key is destroyed a central backup taken before it opens nothing,
so a tenant deleted before the rotation is unreadable in every such backup."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_node.crypto.key_files import WrappingKey, write_key_file
from edge_node.crypto.sealing import CommentUnreadable, TenantSealer
from edge_node.deletion import delete_tenant
from edge_node.errors import KeyMaterialError
from sync.central.fleet_rotation import rotate_fleet
from sync.postgres import Connection
from tests.cli.test_cli import Cli
from tests.sync.replication.test_data_keys import shared_tenant
from tests.sync.support import FLEET_KEY, Edge

OLD, NEW = FLEET_KEY, WrappingKey(b"\x2a" * 32)


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[dict[str, Edge]]:
    """Edges by node id, reopened by `restart`; every one open is closed at the end."""
    opened: dict[str, Edge] = {}
    yield opened
    for edge in opened.values():
        edge.close()


def restart(
    edges: dict[str, Edge], root: Path, node_id: str, fleet: WrappingKey, previous: Any = None
) -> Edge:
    """The node (re)started on its data directory with these fleet keys, as after a restart
    with a new configuration."""
    if node_id in edges:
        edges.pop(node_id).close()
    edge = Edge.open(root / node_id, node_id, fleet_key=fleet, previous_fleet_key=previous)
    edges[node_id] = edge
    return edge


def open_with(fleet: WrappingKey, key_rows: list[Any], tenant_id: str, rating: Any) -> str:
    """A sealed central rating row opened with only the data keys of `key_rows` that `fleet`
    unwraps, as someone holding a database copy and that fleet key would try."""
    keys = {}
    for k in key_rows:
        if str(k["tenant_id"]) == tenant_id:
            try:
                keys[k["key_id"]] = AESGCM(fleet.unwrap(tenant_id, k["key_id"], k["wrapped"]))
            except KeyMaterialError:
                continue

    def no_current() -> tuple[str, AESGCM]:
        raise AssertionError("only opening")

    sealer = TenantSealer(tenant_id, no_current, keys.get)
    text = sealer.open(str(rating["id"]), rating["comment_sealed"])
    assert text is not None
    return text


async def central_snapshot(db: Connection) -> tuple[list[Any], list[Any]]:
    """The central key and rating rows, as a backup of the database holds them."""
    keys = await db.fetch("SELECT * FROM tenant_data_keys")
    ratings = await db.fetch("SELECT * FROM ratings")
    return list(keys), list(ratings)


class TestRotatingTheFleetKey:
    async def test_comments_stay_readable_on_both_edges_and_new_keys_go_up_under_the_new_key(
        self, edges: dict[str, Edge], tmp_path: Path, central: str, db: Connection
    ) -> None:
        """Two edges read a tenant's comment; restarted with the new key and the old one as
        previous, and the central keys re-wrapped, both still read it, a node holding only
        the new key reads it too, and a tenant's key created afterwards goes up under the new
        key and opens on the other edge. A node started between the restarts and the
        rotation unwraps the keys still under the old key with its previous key."""
        a, b = (restart(edges, tmp_path, n, OLD) for n in ("edge-a", "edge-b"))
        t = await shared_tenant(central, a, b)
        a.rate(t, "ana", "book", 5, "before the rotation")
        await a.sync(central)
        await b.sync(central)
        assert b.comments(t) == {("ana", "book"): "before the rotation"}

        a, b = (restart(edges, tmp_path, n, NEW, OLD) for n in ("edge-a", "edge-b"))
        d = restart(edges, tmp_path, "edge-d", NEW, OLD)  # new, before the rotation: unwraps
        await d.sync(central)  # the key still under the old key with the previous one
        assert d.comments(t) == {("ana", "book"): "before the rotation"}
        report = await rotate_fleet(db, NEW, OLD)
        assert (report["rewrapped"], report["under_previous_fleet_key"]) == (1, 0)
        rows = await db.fetch("SELECT fleet_key_id FROM tenant_data_keys")
        assert {r["fleet_key_id"] for r in rows} == {NEW.key_id}

        t2 = await shared_tenant(central, b, a)
        b.rate(t2, "bo", "pen", 4, "after the rotation")
        for edge in (b, a):
            await edge.sync(central)
        assert a.comments(t) == b.comments(t) == {("ana", "book"): "before the rotation"}
        assert a.comments(t2) == {("bo", "pen"): "after the rotation"}
        [key] = await db.fetch("SELECT fleet_key_id FROM tenant_data_keys WHERE tenant_id = $1", t2)
        assert key["fleet_key_id"] == NEW.key_id

        c = restart(edges, tmp_path, "edge-c", NEW)
        await c.sync(central)
        assert c.comments(t) == {("ana", "book"): "before the rotation"}

    async def test_a_backup_from_before_the_rotation_opens_nothing_once_the_old_key_is_gone(
        self, edges: dict[str, Edge], tmp_path: Path, central: str, db: Connection
    ) -> None:
        """A copy of the central rows taken before a tenant's deletion: after the rotation,
        with only the new fleet key, its wrapped data key for the deleted tenant does not
        unwrap and so its sealed comment does not open, while the live tenant's comment still
        opens from the live central rows with the new key alone. Batches of one key each."""
        a = restart(edges, tmp_path, "edge-a", OLD)
        live = await shared_tenant(central, a)
        doomed = await shared_tenant(central, a)
        a.rate(live, "ana", "book", 5, "still here")
        a.rate(doomed, "dan", "book", 1, "forget me")
        await a.sync(central)
        backup_keys, backup_ratings = await central_snapshot(db)
        [doomed_rating] = [r for r in backup_ratings if str(r["tenant_id"]) == doomed]
        assert open_with(OLD, backup_keys, doomed, doomed_rating) == "forget me"  # the threat

        delete_tenant(a.registry, a.stores, doomed)
        await a.sync(central)
        a = restart(edges, tmp_path, "edge-a", NEW, OLD)
        report = await rotate_fleet(db, NEW, OLD, batch_size=1)
        assert (report["rewrapped"], report["batches"]) == (1, 1)
        a = restart(edges, tmp_path, "edge-a", NEW)  # the old key destroyed

        with pytest.raises(CommentUnreadable):
            open_with(NEW, backup_keys, doomed, doomed_rating)
        for k in backup_keys:
            with pytest.raises(KeyMaterialError):
                NEW.unwrap(str(k["tenant_id"]), k["key_id"], k["wrapped"])
        keys_now, ratings_now = await central_snapshot(db)
        [live_rating] = ratings_now
        assert open_with(NEW, keys_now, live, live_rating) == "still here"
        assert a.comments(live) == {("ana", "book"): "still here"}

    async def test_many_keys_rotate_in_batches_and_a_second_run_changes_nothing(
        self, edges: dict[str, Edge], tmp_path: Path, central: str, db: Connection
    ) -> None:
        """Five tenants' keys re-wrap in batches of two, each batch reported as it commits
        (the command's progress line); rotating again re-wraps none and leaves every wrapped
        key byte for byte as the first run left it."""
        a = restart(edges, tmp_path, "edge-a", OLD)
        for n in range(5):
            a.rate(await shared_tenant(central, a), "u", "i", 3, f"comment {n}")
        await a.sync(central)
        reported: list[int] = []
        first = await rotate_fleet(db, NEW, OLD, batch_size=2, on_batch=reported.append)
        assert (first["rewrapped"], first["batches"], first["under_fleet_key"]) == (5, 3, 5)
        assert reported == [2, 4, 5]
        before = await db.fetch("SELECT * FROM tenant_data_keys ORDER BY tenant_id")
        second = await rotate_fleet(db, NEW, OLD, batch_size=2)
        assert (second["rewrapped"], second["batches"], second["under_fleet_key"]) == (0, 0, 5)
        assert await db.fetch("SELECT * FROM tenant_data_keys ORDER BY tenant_id") == before

    async def test_a_node_restarted_late_gets_the_keys_it_skipped_under_the_new_key(
        self, edges: dict[str, Edge], tmp_path: Path, central: str
    ) -> None:
        """A node still on the old key only skips a key another node uploaded under the new
        one (its comment reads as unreadable there); restarted with the new key, it downloads
        every key again and reads the comment."""
        a = restart(edges, tmp_path, "edge-a", NEW, OLD)
        late = restart(edges, tmp_path, "late", OLD)
        t = await shared_tenant(central, a, late)
        a.rate(t, "ana", "book", 5, "under the new key")
        await a.sync(central)
        await late.sync(central)
        assert late.comments(t) == {("ana", "book"): None}
        late = restart(edges, tmp_path, "late", NEW, OLD)
        await late.sync(central)
        assert late.comments(t) == {("ana", "book"): "under the new key"}


class TestTheCommand:
    async def test_rotate_fleet_reports_json_counts_and_is_idempotent(
        self, tmp_path: Path, central: str, db: Connection
    ) -> None:
        """The command with both key files configured re-wraps the key under the previous one
        and prints the counts as JSON; run again, it re-wraps nothing."""
        new, old = tmp_path / "fleet-2.key", tmp_path / "fleet-1.key"
        write_key_file(new)
        previous = write_key_file(old)
        tenant_id, key_id = "00000000-0000-4000-8000-000000000001", "0123456789abcdef"
        await db.execute(
            "INSERT INTO tenant_data_keys (tenant_id, key_id, wrapped, fleet_key_id, created_at)"
            " VALUES ($1, $2, $3, $4, 1)",
            tenant_id,
            key_id,
            previous.wrap(tenant_id, key_id, b"\x01" * 32),
            previous.key_id,
        )
        toml = tmp_path / "node.toml"
        toml.write_text(
            f'[encryption]\nfleet_key_file = "{new}"\nprevious_fleet_key_file = "{old}"\n'
        )
        cli = Cli(tmp_path / "data", tmp_path)
        runs = [cli.run("--config", str(toml), "keys", "rotate-fleet", "--dsn", central)]
        runs.append(cli.run("--config", str(toml), "keys", "rotate-fleet", "--dsn", central))
        counts = []
        for done in runs:
            assert done.returncode == 0, done.stderr
            [report] = json.loads(done.stdout)
            counts.append((report["rewrapped"], report["under_fleet_key"]))
        assert counts == [(1, 1), (0, 1)]

    def test_without_a_fleet_key_the_command_says_which_keys_it_needs(
        self, tmp_path: Path, central: str
    ) -> None:
        """With no fleet key configured the command exits 78 naming both settings, before
        touching the database; with a key file that does not exist it names that file."""
        cli = Cli(tmp_path / "data", tmp_path)
        done = cli.run("keys", "rotate-fleet", "--dsn", central)
        assert done.returncode == 78
        assert "encryption.fleet_key_file" in done.stderr
        assert "encryption.previous_fleet_key_file" in done.stderr
        toml = tmp_path / "node.toml"
        toml.write_text(f'[encryption]\nfleet_key_file = "{tmp_path / "absent.key"}"\n')
        done = cli.run("--config", str(toml), "keys", "rotate-fleet", "--dsn", central)
        assert done.returncode == 78
        assert "absent.key" in done.stderr
        assert "Traceback" not in done.stderr
