"""Comments at rest over real HTTP: stored sealed, served in plain text, bound to their row."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from edge_node.crypto.key_files import read_key_file, write_key_file
from edge_node.crypto.keystore import KEY_STORE_FILE, KEYS_DIRECTORY, Keyring
from edge_node.rating.model import RatingInput
from edge_node.rating.store import TenantStores
from tests.conftest import NodeFactory
from tests.support import RunningNode, Tenant

UNREADABLE = {"comment": None, "comment_unreadable": True}


async def post(node: RunningNode, tenant: Tenant, user: str, comment: str | None) -> Any:
    async with node.session.post(
        node.tenant_url(tenant.tenant_id, "/ratings"),
        headers=tenant.headers,
        json={"user_id": user, "item_id": "book", "score": 4, "comment": comment},
    ) as response:
        return response.status, await response.json()


async def listed(node: RunningNode, tenant: Tenant) -> list[dict[str, Any]]:
    async with node.session.get(
        node.tenant_url(tenant.tenant_id, "/ratings"), headers=tenant.headers
    ) as response:
        assert response.status == 200, await response.text()
        ratings: list[dict[str, Any]] = (await response.json())["ratings"]
        return ratings


def tenant_file(node: RunningNode, tenant: Tenant) -> Path:
    return node.storage.stores.path(tenant.tenant_id)


def sql(path: Path, statement: str, *params: object) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(statement, params).fetchall()
        conn.commit()
        return rows


def every_byte(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


class TestAtRest:
    async def test_comments_are_stored_sealed_and_served_in_plain_text(
        self, node: RunningNode
    ) -> None:
        """A POSTed comment answers and lists in plain text, while no file under the data
        directory (tenant file, its WAL, node.sqlite, queue, key store) holds its text."""
        tenant = Tenant(*_created(node))
        status, body = await post(node, tenant, "ana", "a secret only ana knows")
        assert (status, body["comment"]) == (201, "a secret only ana knows")
        assert [r["comment"] for r in await listed(node, tenant)] == ["a secret only ana knows"]
        [(plain, sealed)] = sql(
            tenant_file(node, tenant), "SELECT comment, comment_sealed FROM ratings"
        )
        assert plain is None
        assert isinstance(sealed, bytes)
        assert b"a secret only ana knows" not in every_byte(node.config.data_path)

    async def test_the_default_master_key_is_generated_once_with_mode_0600(
        self, node: RunningNode
    ) -> None:
        """With no master key configured, the first comment creates data_dir/keys/master.key
        (mode 0600, in a 0700 directory) beside the key store, and it is not replaced later."""
        keys_dir = node.config.data_path / KEYS_DIRECTORY
        tenant = Tenant(*_created(node))
        await post(node, tenant, "ana", "hello")
        master = keys_dir / "master.key"
        assert stat.S_IMODE(master.stat().st_mode) == 0o600
        assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
        assert (keys_dir / KEY_STORE_FILE).exists()
        before = master.read_bytes()
        await post(node, Tenant(*_created(node)), "bo", "another tenant, another data key")
        assert master.read_bytes() == before
        assert sql(keys_dir / KEY_STORE_FILE, "SELECT count(*) FROM data_keys") == [(2,)]


class TestMovedCiphertext:
    async def test_a_comment_moved_to_another_row_reads_as_unreadable_not_as_an_error(
        self, node: RunningNode
    ) -> None:
        """Copying ana's sealed comment into bo's row makes bo's comment unreadable, even just
        after both were read: the list answers 200 with `comment: null, comment_unreadable:
        true` for bo, and ana's intact."""
        tenant = Tenant(*_created(node))
        await post(node, tenant, "ana", "ana's words")
        await post(node, tenant, "bo", "bo's words")
        await listed(node, tenant)  # both opened once: remembered opened comments must not leak
        path = tenant_file(node, tenant)
        sql(
            path,
            "UPDATE ratings SET comment_sealed ="
            " (SELECT comment_sealed FROM ratings WHERE user_id = 'ana') WHERE user_id = 'bo'",
        )
        by_user = {r["user_id"]: r for r in await listed(node, tenant)}
        assert by_user["ana"]["comment"] == "ana's words"
        assert "comment_unreadable" not in by_user["ana"]
        assert {k: by_user["bo"][k] for k in UNREADABLE} == UNREADABLE

    async def test_a_comment_moved_to_another_tenant_is_unreadable_there(
        self, node: RunningNode
    ) -> None:
        """A sealed row copied whole (same rating id) into another tenant's file does not
        open there: the seal is bound to its tenant and that tenant's data key."""
        victim, other = Tenant(*_created(node)), Tenant(*_created(node))
        await post(node, victim, "ana", "victim's words")
        await post(node, other, "ana", "other's words")
        await listed(node, victim)
        [(sealed,)] = sql(tenant_file(node, victim), "SELECT comment_sealed FROM ratings")
        sql(tenant_file(node, other), "UPDATE ratings SET comment_sealed = ?", sealed)
        [rating] = await listed(node, other)
        assert {k: rating[k] for k in UNREADABLE} == UNREADABLE


class TestLegacyFiles:
    def test_plain_text_comments_of_an_older_file_are_sealed_when_it_opens(
        self, tmp_path: Path
    ) -> None:
        """A tenant file holding comments in plain text (written before encryption) is
        sealed on open: `comment` emptied, the seal readable, and each row queued for upload
        with a later updated_at so the central copy is replaced too."""
        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get("11111111-1111-4111-8111-111111111111")
        rating, _ = store.upsert(RatingInput("ana", "book", 5, None))
        store.acknowledge_uploaded(10**9)
        stores.close()
        path = tmp_path / "tenants" / "11111111-1111-4111-8111-111111111111.sqlite"
        sql(path, "UPDATE ratings SET comment = 'old plain words'")
        sql(path, "DELETE FROM sync_state WHERE key = 'plaintext_comments_sealed'")

        stores = TenantStores(tmp_path / "tenants", node_id="n1")
        store = stores.get(rating.tenant_id)
        [(plain, updated_at)] = sql(path, "SELECT comment, updated_at FROM ratings")
        assert plain is None
        assert updated_at == rating.updated_at + 1
        assert [r["comment"] for r in store.page().ratings] == ["old plain words"]
        assert [row.id for row in store.pending_changes(10)[0]] == [rating.id]
        stores.close()
        assert b"old plain words" not in path.read_bytes()


class TestMasterKey:
    async def test_a_configured_master_key_file_is_used_and_none_is_generated(
        self, make_node: NodeFactory, tmp_path: Path
    ) -> None:
        """encryption.master_key_file names the key (here a systemd-style credential path):
        the node wraps with it and creates no master.key of its own."""
        key_file = tmp_path / "credentials" / "master-key"
        write_key_file(key_file)
        node = await make_node(**{"encryption.master_key_file": str(key_file)})
        tenant = Tenant(*_created(node))
        assert (await post(node, tenant, "ana", "hi"))[0] == 201
        assert not (node.config.data_path / KEYS_DIRECTORY / "master.key").exists()
        assert node.storage.stores.keyring.master_key_id() == _key_id(key_file)

    async def test_a_wrong_master_key_answers_503_and_unreadable_never_500(
        self, node: RunningNode
    ) -> None:
        """Opened with another master key than the one that wrapped its data keys, a node
        answers POSTs with a comment 503 `data-key-unavailable` naming both keys, and lists
        existing ratings with their comments unreadable; nothing answers 500."""
        tenant = Tenant(*_created(node))
        await post(node, tenant, "ana", "written under the first key")
        master = node.config.data_path / KEYS_DIRECTORY / "master.key"
        master.unlink()
        write_key_file(master)
        node.storage.stores.keyring.close()  # as a restart would: keys reopen from the files
        status, problem = await post(node, tenant, "bo", "new words")
        assert (status, problem["type"]) == (503, "urn:edge-node:problem:data-key-unavailable")
        assert "wrapped by master key" in problem["detail"]
        [rating] = await listed(node, tenant)
        assert {k: rating[k] for k in UNREADABLE} == UNREADABLE


def _created(node: RunningNode) -> tuple[str, str, str]:
    tenant = node.create_tenant()
    return tenant.tenant_id, tenant.api_key, tenant.key_id


def _key_id(path: Path) -> str:
    from edge_node.crypto.key_files import read_key_file  # noqa: PLC0415

    return read_key_file(path, "test").key_id


def _open_keyring(directory: str, barrier: Any, results: Any) -> None:
    keyring = Keyring(Path(directory))
    barrier.wait()
    try:
        results.put(keyring.master_key_id())
    except Exception as exc:  # reported to the test, which fails on it
        results.put(f"{type(exc).__name__}: {exc}")
    finally:
        keyring.close()


def _open_together(directory: Path, start_method: str) -> list[str]:
    """Six processes open the key store in `directory` at once: what each reported."""
    context = multiprocessing.get_context(start_method)
    results = context.Queue()
    barrier = context.Barrier(6)
    processes = [
        context.Process(target=_open_keyring, args=(str(directory), barrier, results))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    answers = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    return answers


class TestMasterKeyCreation:
    def test_workers_starting_together_agree_on_one_master_key(self, tmp_path: Path) -> None:
        """Six processes open the key store of a new node at once (the workers of `serve
        --workers N` starting): one creates master.key, every other reads that same key,
        none sees it empty or half written, and no scratch file is left."""
        directory = tmp_path / KEYS_DIRECTORY
        answers = _open_together(directory, "spawn")
        assert len(set(answers)) == 1, answers
        assert answers[0] == _key_id(directory / "master.key")
        names = {p.name for p in directory.iterdir() if "master" in p.name}
        assert names == {"master.key", ".master.lock"}  # no scratch file left


def _write_slowly(path: str) -> None:
    """In a child: create a key file with every write of its content taking 0.3 s."""
    import edge_node.crypto.key_files as key_files  # noqa: PLC0415 - patched in this process only

    real_write = os.write

    def slow_write(fd: int, data: bytes) -> int:
        time.sleep(0.3)
        return real_write(fd, data)

    key_files.os.write = slow_write  # type: ignore[assignment]
    key_files.write_key_file(Path(path))


class TestKeyFileCreation:
    def test_a_key_file_is_never_seen_empty_or_half_written(self, tmp_path: Path) -> None:
        """While one process writes a new key file slowly, another reading it finds either
        no file or the whole key: never an empty file that stops a worker with exit 78."""
        path = tmp_path / "keys" / "master.key"
        writer = multiprocessing.get_context("fork").Process(target=_write_slowly, args=(path,))
        writer.start()
        seen_whole = 0
        while writer.is_alive() or not seen_whole:
            if path.exists():
                read_key_file(path, "test")  # raises ConfigError on an empty or short file
                seen_whole += 1
            if not writer.is_alive() and not path.exists():
                break
        writer.join(timeout=10)
        assert writer.exitcode == 0
        assert seen_whole
        assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no scratch file

    def test_a_rotation_finished_by_workers_starting_together_keeps_the_new_key(
        self, tmp_path: Path
    ) -> None:
        """A rotation that stopped after its commit (master.key.next installed at the next
        open) is finished by exactly one of six processes opening the key store at once;
        the others wait for it, and none retires the key just installed."""
        directory = tmp_path / KEYS_DIRECTORY
        keyring = Keyring(directory)
        keyring.master_key_id()
        pending = directory / "master.key.next"
        keyring.rotate_master(write_key_file(pending))  # then "crash": no rename
        new_id = _key_id(pending)
        keyring.close()
        answers = _open_together(directory, "fork")
        assert answers == [new_id] * 6
        assert _key_id(directory / "master.key") == new_id
        assert not pending.exists()
