"""`edge-node keys rotate-master` and `edge-node tenants delete` (crypto-shredding), run as
operators run them, against real files."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge_node.config import Config, load_config
from edge_node.crypto.key_files import write_key_file
from edge_node.crypto.keystore import (
    DEFAULT_MASTER_KEY_FILE,
    KEY_STORE_FILE,
    KEYS_DIRECTORY,
    NEXT_SUFFIX,
    REFRESH_INTERVAL_SECONDS,
    open_keyring,
)
from edge_node.rating.model import RatingInput
from edge_node.rating.store import TenantStores
from tests.cli.test_cli import Cli, Daemon


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    return Cli(tmp_path / "data", workdir)


def config_of(data_dir: Path, **overrides: Any) -> Config:
    return load_config(environ={}, overrides={"data_dir": str(data_dir), **overrides})


@contextlib.contextmanager
def stores_of(config: Config) -> Iterator[TenantStores]:
    stores = TenantStores(config.data_path / "tenants", node_id="n1", keyring=open_keyring(config))
    try:
        yield stores
    finally:
        stores.close()


def write_comments(config: Config, tenant_id: str, count: int = 3) -> None:
    with stores_of(config) as stores:
        for i in range(count):
            stores.get(tenant_id).upsert(RatingInput(f"user-{i}", "book", 4, f"comment {i}"))


def read_comments(config: Config, tenant_id: str) -> list[str | None]:
    with stores_of(config) as stores:
        return [r["comment"] for r in stores.get(tenant_id).page().ratings]


def sealed_column(path: Path) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            "SELECT id, comment_sealed, updated_at FROM ratings ORDER BY id"
        ).fetchall()


def wrapped_keys(keys_dir: Path, tenant_id: str) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(keys_dir / KEY_STORE_FILE)) as conn:
        rows = conn.execute("SELECT wrapped FROM data_keys WHERE tenant_id = ?", (tenant_id,))
        return [bytes(row[0]) for row in rows]


def every_byte(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def online_backup(data_dir: Path, backup: Path) -> None:
    """What `edge-node backup DIR` copies: node.sqlite and the tenant files, never keys/."""
    (backup / "tenants").mkdir(parents=True)
    sources = [data_dir / "node.sqlite", *sorted((data_dir / "tenants").glob("*.sqlite"))]
    for source in sources:
        target = backup / source.relative_to(data_dir)
        with (
            contextlib.closing(sqlite3.connect(source)) as src,
            contextlib.closing(sqlite3.connect(target)) as dst,
        ):
            src.backup(dst)


class TestRotateMaster:
    def test_rotation_rewraps_every_data_key_and_retires_the_old_key_file(self, cli: Cli) -> None:
        """With the default key file, rotate-master re-wraps each tenant's data keys under a
        new key that replaces master.key, rewrites no rating row, leaves none of the old key
        on disk, and every comment still reads."""
        tenants = [cli.create_tenant()["tenant_id"] for _ in range(2)]
        config = config_of(cli.data_dir)
        for tenant_id in tenants:
            write_comments(config, tenant_id)
        keys_dir = cli.data_dir / KEYS_DIRECTORY
        old_key = (keys_dir / DEFAULT_MASTER_KEY_FILE).read_bytes()
        rows_before = [sealed_column(cli.data_dir / "tenants" / f"{t}.sqlite") for t in tenants]

        report = cli.json("keys", "rotate-master")

        assert report["data_keys_rewrapped"] == 2
        assert report["master_key_id"] != report["previous_master_key_id"]
        new_key = (keys_dir / DEFAULT_MASTER_KEY_FILE).read_bytes()
        assert new_key != old_key
        assert not (keys_dir / (DEFAULT_MASTER_KEY_FILE + NEXT_SUFFIX)).exists()
        assert old_key.strip() not in every_byte(cli.data_dir)
        for tenant_id, before in zip(tenants, rows_before, strict=True):
            assert sealed_column(cli.data_dir / "tenants" / f"{tenant_id}.sqlite") == before
            assert read_comments(config, tenant_id) == ["comment 0", "comment 1", "comment 2"]

    def test_rotation_to_a_new_key_file_then_the_old_file_removed(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        """With encryption.master_key_file set, rotate-master --new-key-file generates the new
        key there; once the operator points the configuration at it and removes the old file
        every comment reads, and the old key is refused with a message naming both keys."""
        old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
        write_key_file(old_file)
        tenant_id = cli.create_tenant()["tenant_id"]
        old = config_of(cli.data_dir, **{"encryption.master_key_file": str(old_file)})
        write_comments(old, tenant_id)
        toml = tmp_path / "node.toml"
        toml.write_text(f'[encryption]\nmaster_key_file = "{old_file}"\n')

        report = cli.json(
            "--config", str(toml), "keys", "rotate-master", "--new-key-file", str(new_file)
        )

        assert report["master_key_file"] == str(new_file)
        assert "next_step" in report
        saved_old = old_file.read_bytes()
        old_file.unlink()
        new = config_of(cli.data_dir, **{"encryption.master_key_file": str(new_file)})
        assert read_comments(new, tenant_id) == ["comment 0", "comment 1", "comment 2"]
        old_file.write_bytes(saved_old)
        assert read_comments(old, tenant_id) == [None, None, None]
        refused = cli.run(
            "--config", str(toml), "keys", "rotate-master", "--new-key-file", str(new_file)
        )
        assert refused.returncode == 1
        assert "wrapped by master key" in refused.stderr
        assert "Traceback" not in refused.stderr

    def test_rotation_is_refused_while_the_daemon_serves(self, cli: Cli) -> None:
        """A running daemon holds unwrapped keys and its queue lock: rotate-master exits 75
        and changes nothing."""
        cli.create_tenant()
        daemon = Daemon(cli)
        try:
            done = cli.run("keys", "rotate-master")
            assert done.returncode == 75, done.stderr
            assert "stop it first" in done.stderr
        finally:
            daemon.stop()
            daemon.close()
        assert cli.json("keys", "rotate-master")["data_keys_rewrapped"] == 0

    def test_a_rotation_interrupted_after_its_commit_is_finished_on_next_open(
        self, tmp_path: Path
    ) -> None:
        """If the process dies between re-wrapping (committed) and replacing master.key, the
        next open installs master.key.next, and every comment reads."""
        config = config_of(tmp_path)
        tenant_id = "22222222-2222-4222-8222-222222222222"
        write_comments(config, tenant_id)
        keys_dir = tmp_path / KEYS_DIRECTORY
        keyring = open_keyring(config)
        keyring.master_key_id()  # open, as rotate-master does before writing the next key
        pending = keys_dir / (DEFAULT_MASTER_KEY_FILE + NEXT_SUFFIX)
        keyring.rotate_master(write_key_file(pending))  # then "crash": no rename
        keyring.close()
        assert read_comments(config, tenant_id) == ["comment 0", "comment 1", "comment 2"]
        assert not pending.exists()


class TestMasterKeyAtStart:
    def test_a_missing_master_key_file_stops_serve_with_exit_78(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        """`serve` with encryption.master_key_file naming no file exits 78 naming the key,
        before listening, rather than failing on the first comment."""
        toml = tmp_path / "node.toml"
        toml.write_text(f'[encryption]\nmaster_key_file = "{tmp_path / "absent.key"}"\n')
        done = cli.run("--config", str(toml), "serve", "--port", "0")
        assert done.returncode == 78
        assert "encryption.master_key_file" in done.stderr
        assert "Traceback" not in done.stderr


class TestCryptoShredding:
    def test_a_deleted_tenants_comments_are_unreadable_in_every_copy_backups_included(
        self, cli: Cli, tmp_path: Path
    ) -> None:
        """`tenants delete` destroys the tenant's data keys (no trace left in the key store's
        files), its rating file and registry rows; a backup of node.sqlite and tenant files
        taken before, even restored in place, serves its ratings with comments unreadable,
        while another tenant's comments in the same backup still read."""
        doomed, kept = cli.create_tenant()["tenant_id"], cli.create_tenant()["tenant_id"]
        config = config_of(cli.data_dir)
        write_comments(config, doomed)
        write_comments(config, kept)
        keys_dir = cli.data_dir / KEYS_DIRECTORY
        doomed_keys = wrapped_keys(keys_dir, doomed)
        assert doomed_keys
        backup = tmp_path / "backup"
        online_backup(cli.data_dir, backup)

        report = cli.json("tenants", "delete", doomed)

        assert report == {
            "tenant_id": doomed,
            "data_keys_destroyed": 1,
            "rating_file_removed": True,
            "registry_rows_removed": True,
        }
        assert not (cli.data_dir / "tenants" / f"{doomed}.sqlite").exists()
        assert doomed not in cli.run("tenants", "list").stdout
        stored = every_byte(keys_dir)
        assert all(key not in stored for key in doomed_keys)
        # Restore the backup in place (keys/ is not part of it, so the live key store stays).
        shutil.copy(backup / "node.sqlite", cli.data_dir / "node.sqlite")
        for path in (backup / "tenants").iterdir():
            shutil.copy(path, cli.data_dir / "tenants" / path.name)
        assert doomed in cli.run("tenants", "list").stdout
        assert read_comments(config, doomed) == [None, None, None]
        assert read_comments(config, kept) == ["comment 0", "comment 1", "comment 2"]
        with stores_of(config) as stores:
            assert all(r.get("comment_unreadable") for r in stores.get(doomed).page().ratings)

    def test_a_shred_by_another_process_reaches_a_running_keyring_at_once(
        self, tmp_path: Path
    ) -> None:
        """A node that has just served a tenant's comments (keys and opened comments in
        memory) serves them unreadable once another process has shredded the tenant, within
        the key ring's refresh interval."""
        config = config_of(tmp_path)
        tenant_id = "44444444-4444-4444-8444-444444444444"
        write_comments(config, tenant_id)
        with stores_of(config) as serving:
            comments = [r["comment"] for r in serving.get(tenant_id).page().ratings]
            assert comments == ["comment 0", "comment 1", "comment 2"]
            other_process = open_keyring(config)
            other_process.shred(tenant_id)
            other_process.close()
            time.sleep(REFRESH_INTERVAL_SECONDS)
            ratings = serving.get(tenant_id).page().ratings
            assert [(r["comment"], r.get("comment_unreadable")) for r in ratings] == [
                (None, True)
            ] * 3

    def test_a_shred_by_another_process_reaches_the_pages_kept_in_memory(
        self, tmp_path: Path
    ) -> None:
        """A page of comments the API has served, kept in memory as its encoded answer, is
        served unreadable once another process has shredded the tenant, within the key
        ring's refresh interval, though the tenant's file did not change."""
        config = config_of(tmp_path)
        tenant_id = "55555555-5555-4555-8555-555555555555"
        write_comments(config, tenant_id)
        with stores_of(config) as serving:
            served = orjson.loads(serving.get(tenant_id).page_document())["ratings"]
            assert [r["comment"] for r in served] == ["comment 0", "comment 1", "comment 2"]
            other_process = open_keyring(config)
            other_process.shred(tenant_id)
            other_process.close()
            time.sleep(REFRESH_INTERVAL_SECONDS)
            served = orjson.loads(serving.get(tenant_id).page_document())["ratings"]
            assert [(r["comment"], r.get("comment_unreadable")) for r in served] == [
                (None, True)
            ] * 3

    def test_a_deleted_tenant_gets_no_new_data_key(self, cli: Cli) -> None:
        """Once shredded, a tenant id never gets a data key again: a late write with a comment
        is refused rather than sealed under a fresh key."""
        tenant_id = cli.create_tenant()["tenant_id"]
        cli.json("tenants", "delete", tenant_id)
        config = config_of(cli.data_dir)
        with stores_of(config) as stores, pytest.raises(Exception, match="was deleted"):
            stores.get(tenant_id).upsert(RatingInput("ana", "book", 3, "too late"))

    def test_deleting_an_unknown_tenant_is_an_error(self, cli: Cli) -> None:
        """An id no registry row or file knows exits 1 with a message, and a non-UUID too."""
        for tenant_id in ("33333333-3333-4333-8333-333333333333", "not-a-uuid"):
            done = cli.run("tenants", "delete", tenant_id)
            assert done.returncode == 1
            assert "Traceback" not in done.stderr
