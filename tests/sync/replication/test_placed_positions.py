"""Checkpoints on Citus: one part per shard, bound to the worker group that held it, and the
feed's statement written out for one shard placement (no server needed)."""

from __future__ import annotations

import pytest

from sync.replication.change_feed import ChangeFeed
from sync.replication.placed_feed import PlacedPosition, ShardPart
from sync.replication.positions import Position

DB = "7716406078330662736/16384"
FEED = ChangeFeed(
    "billing events",
    "billing_events e",
    "e",
    "e.tenant_id::text AS tenant_id, e.event_id",
    (("tenant_id", "uuid"), ("event_id", "text")),
)


class TestPlacedPosition:
    def test_a_position_survives_its_text(self) -> None:
        """Encoding and decoding keeps every part: group, position, last key, scan state."""
        position = PlacedPosition(
            DB,
            {
                102008: ShardPart(1, 751, None, scanning=False),
                102009: ShardPart(2, 0, ("t", "evt_1"), scanning=True, scan=749),
            },
        )
        assert PlacedPosition.decode(position.encode(), DB) == position

    @pytest.mark.parametrize(
        "text",
        [
            None,
            Position(DB, 751).encode(),  # plain PostgreSQL's: the database became a coordinator
            PlacedPosition("other/1", {1: ShardPart(1, 5, None, False)}).encode(),
            '{"v":1,"db":"' + DB + '","shards":{"x":{}}}',
            "not json",
        ],
        ids=["none", "plain", "other-database", "damaged", "garbage"],
    )
    def test_anything_else_is_the_start(self, text: str | None) -> None:
        """A checkpoint of plain PostgreSQL, of another database or unreadable is the start:
        every shard is scanned again, never resumed from a position that means nothing."""
        assert PlacedPosition.decode(text, DB).is_start

    def test_a_tenant_covers_the_shard_only_on_the_same_groups_and_as_far(self) -> None:
        """A tenant read up to the shard checkpoint's horizons, on the same worker groups,
        covers it; a shard read on another group (moved since), one still scanning or behind
        does not."""
        shard = PlacedPosition(
            DB, {1: ShardPart(1, 700, None, False), 2: ShardPart(2, 50, None, False)}
        )
        level = PlacedPosition(
            DB, {1: ShardPart(1, 710, None, False), 2: ShardPart(2, 50, None, False)}
        )
        assert level.covers(shard)
        moved = PlacedPosition(
            DB, {1: ShardPart(2, 710, None, False), 2: ShardPart(2, 50, None, False)}
        )
        assert not moved.covers(shard)
        scanning = PlacedPosition(
            DB, {1: ShardPart(1, 0, ("a",), True, 710), 2: ShardPart(2, 50, None, False)}
        )
        assert not scanning.covers(shard)
        behind = PlacedPosition(
            DB, {1: ShardPart(1, 690, None, False), 2: ShardPart(2, 50, None, False)}
        )
        assert not behind.covers(shard)
        assert level.covers(PlacedPosition(DB))


class TestPlacedStatement:
    def test_the_shard_statement_names_the_shards_and_quotes_every_value(self) -> None:
        """Tables become their shards; the key read last is a quoted literal, a quote in it
        doubled, so a Stripe event id cannot end the string."""
        since = Position("", 751, ("0b7e4f3c-0000-4000-8000-000000000000", "evt_'x"))
        sql = FEED.placed_sql(
            {"billing_events": "billing_events_102020"}, since, 100, 800, None, scan=False
        )
        assert "FROM billing_events_102020 e" in sql
        assert "'evt_''x'::text" in sql
        assert "'751'::text::xid8" in sql
        assert "LIMIT 100" in sql
        assert "$" not in sql

    def test_a_scan_reads_in_key_order_whatever_the_change_position(self) -> None:
        """The scan of a shard read from its beginning filters on the key alone."""
        sql = FEED.placed_sql({}, Position("", 0), 10, 800, None, scan=True)
        assert "ORDER BY e.tenant_id, e.event_id" in sql
        assert "change_xid >=" not in sql
