"""The per-tenant SQLite schema, as migrations: ratings, score aggregates kept by triggers, outbox.

Score aggregates (count, sum, histogram) live in `item_scores` and are kept by triggers on
`ratings`, so every insert, update, tombstone and purge adjusts them inside the writing
transaction, whichever code path wrote the row (a local request or a downloaded change).

Migration 2 adds what replication needs: `outbox` lists ratings changed locally and not yet
uploaded (written in the same transaction as the change), and `sync_state` keeps the
download checkpoint.

Migration 3 adds `comment_sealed`, the comment as AES-256-GCM ciphertext
(`edge_node.crypto.sealing`, at most 2000 characters of UTF-8 plus the seal's overhead). From then
on `comment` holds no text: a file written before is sealed row by row when it is first opened
(`TenantStore.seal_plaintext_comments`).

Migration 4 narrows the update triggers to the updates that change an item's aggregates. A
rating leaving or joining them (a tombstone, a revival, a move to another item) is removed or
added as before; a live rating given another score is moved between buckets in one statement
instead of a removal and an addition; any other update (a new comment, a new origin) runs
none. The triggers name the columns they read (`UPDATE OF`), so an UPDATE setting none of
them does not even enter them.
"""

from __future__ import annotations

_SCORE_ADD = """
    INSERT INTO item_scores (tenant_id, item_id, count, total, s1, s2, s3, s4, s5)
    VALUES (NEW.tenant_id, NEW.item_id, 1, NEW.score,
            NEW.score = 1, NEW.score = 2, NEW.score = 3, NEW.score = 4, NEW.score = 5)
    ON CONFLICT (tenant_id, item_id) DO UPDATE SET
        count = count + 1, total = total + NEW.score,
        s1 = s1 + (NEW.score = 1), s2 = s2 + (NEW.score = 2), s3 = s3 + (NEW.score = 3),
        s4 = s4 + (NEW.score = 4), s5 = s5 + (NEW.score = 5);"""

_SCORE_REMOVE = """
    UPDATE item_scores SET
        count = count - 1, total = total - OLD.score,
        s1 = s1 - (OLD.score = 1), s2 = s2 - (OLD.score = 2), s3 = s3 - (OLD.score = 3),
        s4 = s4 - (OLD.score = 4), s5 = s5 - (OLD.score = 5)
    WHERE tenant_id = OLD.tenant_id AND item_id = OLD.item_id;"""

# An update that takes a rating out of an item's aggregates or puts it in: a tombstone, a
# revival, or a move to another item (or tenant).
_LEAVES_OR_JOINS = """NEW.deleted <> OLD.deleted OR NEW.item_id IS NOT OLD.item_id
    OR NEW.tenant_id IS NOT OLD.tenant_id"""

_SCORE_MOVE = """
    UPDATE item_scores SET
        total = total - OLD.score + NEW.score,
        s1 = s1 - (OLD.score = 1) + (NEW.score = 1), s2 = s2 - (OLD.score = 2) + (NEW.score = 2),
        s3 = s3 - (OLD.score = 3) + (NEW.score = 3), s4 = s4 - (OLD.score = 4) + (NEW.score = 4),
        s5 = s5 - (OLD.score = 5) + (NEW.score = 5)
    WHERE tenant_id = NEW.tenant_id AND item_id = NEW.item_id;"""

MIGRATIONS = (
    f"""
    CREATE TABLE ratings (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
        item_id TEXT NOT NULL CHECK (length(item_id) BETWEEN 1 AND 128),
        score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
        comment TEXT CHECK (comment IS NULL OR length(comment) <= 2000),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        origin_node TEXT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
        UNIQUE (tenant_id, user_id, item_id)
    ) WITHOUT ROWID;
    CREATE INDEX ratings_in_order ON ratings (created_at, id) WHERE deleted = 0;
    CREATE INDEX ratings_by_item ON ratings (item_id, created_at, id) WHERE deleted = 0;
    CREATE INDEX ratings_by_user ON ratings (user_id, created_at, id) WHERE deleted = 0;
    CREATE TABLE item_scores (
        tenant_id TEXT NOT NULL,
        item_id TEXT NOT NULL,
        count INTEGER NOT NULL CHECK (count >= 0),
        total INTEGER NOT NULL,
        s1 INTEGER NOT NULL, s2 INTEGER NOT NULL, s3 INTEGER NOT NULL,
        s4 INTEGER NOT NULL, s5 INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, item_id)
    ) WITHOUT ROWID;
    CREATE TRIGGER ratings_score_on_insert AFTER INSERT ON ratings WHEN NEW.deleted = 0
    BEGIN {_SCORE_ADD}
    END;
    CREATE TRIGGER ratings_score_on_update_old AFTER UPDATE ON ratings WHEN OLD.deleted = 0
    BEGIN {_SCORE_REMOVE}
    END;
    CREATE TRIGGER ratings_score_on_update_new AFTER UPDATE ON ratings WHEN NEW.deleted = 0
    BEGIN {_SCORE_ADD}
    END;
    CREATE TRIGGER ratings_score_on_delete AFTER DELETE ON ratings WHEN OLD.deleted = 0
    BEGIN {_SCORE_REMOVE}
    END;
    """,
    """
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        rating_id TEXT NOT NULL
    );
    CREATE TABLE sync_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO outbox (rating_id) SELECT id FROM ratings ORDER BY updated_at;
    """,
    """
    ALTER TABLE ratings ADD COLUMN comment_sealed BLOB
        CHECK (comment_sealed IS NULL OR length(comment_sealed) <= 8192);
    """,
    f"""
    DROP TRIGGER ratings_score_on_update_old;
    DROP TRIGGER ratings_score_on_update_new;
    CREATE TRIGGER ratings_score_on_update_old AFTER UPDATE OF deleted, item_id, tenant_id
    ON ratings WHEN OLD.deleted = 0 AND ({_LEAVES_OR_JOINS})
    BEGIN {_SCORE_REMOVE}
    END;
    CREATE TRIGGER ratings_score_on_update_new AFTER UPDATE OF deleted, item_id, tenant_id
    ON ratings WHEN NEW.deleted = 0 AND ({_LEAVES_OR_JOINS})
    BEGIN {_SCORE_ADD}
    END;
    CREATE TRIGGER ratings_score_on_rescore AFTER UPDATE OF score ON ratings
    WHEN NOT ({_LEAVES_OR_JOINS}) AND NEW.deleted = 0 AND NEW.score <> OLD.score
    BEGIN {_SCORE_MOVE}
    END;
    """,
)

# A rating's columns as they are read back: as the API serves it (edge_node.rating.tenant_store),
# and with its origin and tombstone as it replicates (RatingRow's fields, in their order).
RATING_COLUMNS = "id, tenant_id, user_id, item_id, score, comment_sealed, created_at, updated_at"
ROW_COLUMNS = RATING_COLUMNS + ", origin_node, deleted"
