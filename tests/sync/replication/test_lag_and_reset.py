"""Download lag made visible, and `edge-node sync reset-checkpoints` after a rewind of the
central database; on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json

from sync.postgres import Connection, connect
from sync.replication.positions import Position, database_identity
from sync.replication.ratings import upload_ratings
from sync.replication.shard_state import set_shard_checkpoint
from sync.status import read_status_file
from tests.cli.test_cli import EXIT_CONFIG
from tests.sync.central.test_schema import run_cli
from tests.sync.conftest import EdgeFactory
from tests.sync.replication.test_ratings import remote_row, shared_tenant
from tests.sync.support import central_rows, central_scores


class TestHorizonLag:
    async def test_a_long_central_transaction_shows_as_download_lag(
        self, make_edge: EdgeFactory, central: str
    ) -> None:
        """While a central transaction that wrote a rating stays open, rounds succeed but the
        shard reports a growing horizon lag and the state "lagging", in the snapshot and the
        status file; once it commits, its row arrives and the lag falls back to about zero."""
        a = make_edge("edge-a")
        t = await shared_tenant(central, a)
        worker = a.worker([central], horizon_lag_warning=1.0)
        await worker.run_once()
        holder = await connect(central)
        try:
            transaction = holder.transaction()
            await transaction.start()
            await upload_ratings(holder, [remote_row(t, "u1", "i", 4, updated_at=5, origin="w")])
            await asyncio.sleep(1.2)
            await worker.run_once()
            snapshot = worker.snapshot()
            [shard] = snapshot.shards
            assert shard.state == "lagging"
            assert (shard.horizon_lag_seconds(snapshot.taken_at) or 0) >= 1.2
            assert (shard.horizon_lag_xids or 0) >= 1
            assert shard.last_download_at is not None
            status = read_status_file(a.data_dir)
            assert status is not None
            [document] = status["shards"]
            assert document["state"] == "lagging"
            assert document["horizon_lag_seconds"] >= 1.2
            assert document["last_download_at"] is not None
            assert a.rows(t) == []
            await transaction.commit()
        finally:
            await holder.close()
        await worker.run_once()
        await worker.stop(grace=0)
        [shard] = worker.status()
        assert [r[2] for r in a.rows(t)] == ["u1"]
        assert shard.horizon_lag_xids == 0
        assert (shard.horizon_lag_seconds(shard.last_success_at or 0) or 0) < 1.0


class TestResetCheckpoints:
    async def test_a_reset_after_a_rewind_downloads_everything_and_converges(
        self, make_edge: EdgeFactory, central: str, db: Connection
    ) -> None:
        """Checkpoints ahead of the central database (as after a failover to an asynchronous
        standby that lost its last transactions) skip new central rows and registry changes;
        after `edge-node sync reset-checkpoints` the edge downloads everything again and ends
        with exactly the central rows and scores, its own newer write included."""
        a, b = make_edge("edge-a"), make_edge("edge-b")
        t = await shared_tenant(central, a, b)
        a.rate(t, "u1", "book", 5)
        await a.sync(central)
        await b.sync(central)
        current = int(await db.fetchval("SELECT pg_current_xact_id()::text"))
        ahead = Position(await database_identity(db), current + 1_000_000).encode()
        set_shard_checkpoint(b.node_database, 0, ahead)
        for name in ("registry.tenants.shard-0", "registry.keys.shard-0"):
            b.registry.apply_remote([], [], checkpoint=(name, ahead))

        a.rate(t, "u2", "film", 3)
        a.rate(t, "u1", "book", 2)
        await a.sync(central)
        await db.execute("UPDATE tenants SET status = 'suspended'")
        b.rate(t, "u3", "song", 4)
        await b.sync(central)
        assert sorted(r[2] for r in b.rows(t)) == ["u1", "u3"]  # u2 skipped, u1 stale
        assert b.registry.get_tenant(t).status == "active"  # type: ignore[union-attr]

        done = run_cli(
            "--data-dir",
            str(b.data_dir),
            "sync",
            "reset-checkpoints",
            env={"EDGE_NODE_CENTRAL_DSNS": json.dumps([central])},
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["reset"] == [{"shard": 0, "generation": 1}]
        await b.sync(central)
        await a.sync(central)
        expected = await central_rows(db, t)
        assert b.rows(t) == expected
        assert a.rows(t) == expected
        assert b.scores(t) == await central_scores(db, t)
        assert b.registry.get_tenant(t).status == "suspended"  # type: ignore[union-attr]

    def test_a_shard_out_of_range_is_a_configuration_error(self, make_edge: EdgeFactory) -> None:
        """--shard must name one of central.dsns; otherwise exit 78 and nothing is reset."""
        b = make_edge("edge-b")
        done = run_cli(
            "--data-dir",
            str(b.data_dir),
            "sync",
            "reset-checkpoints",
            "--shard",
            "3",
            env={"EDGE_NODE_CENTRAL_DSNS": json.dumps(["postgresql://u@127.0.0.1:1/x"])},
        )
        assert done.returncode == EXIT_CONFIG
        assert "--shard must be between 0 and 0" in done.stderr
