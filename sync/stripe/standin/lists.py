"""Stripe's list pages: `{"object": "list", "data", "has_more", "url"}` with `limit` (1-100,
default 10) and the `starting_after` / `ending_before` cursors (object ids)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sync.stripe.standin.faults import StripeFault

T = TypeVar("T")


def page(items: Sequence[Any], query: Mapping[str, Any], url: str) -> dict[str, Any]:
    """One page of `items` (already in Stripe's order) after or before a cursor."""
    try:
        limit = int(str(query.get("limit", 10)))
    except ValueError:
        raise StripeFault(400, f"Invalid integer: {query['limit']}", param="limit") from None
    if not 1 <= limit <= 100:
        raise StripeFault(400, "Invalid limit: must be between 1 and 100", param="limit")
    ids = [item["id"] for item in items]
    chosen = list(items)
    if query.get("starting_after") in ids:
        chosen = chosen[ids.index(query["starting_after"]) + 1 :]
    elif query.get("ending_before") in ids:
        before = chosen[: ids.index(query["ending_before"])]
        return {
            "object": "list",
            "data": before[-limit:],
            "has_more": len(before) > limit,
            "url": url,
        }
    return {"object": "list", "data": chosen[:limit], "has_more": len(chosen) > limit, "url": url}


def newest_first(items: Iterable[T], created: Callable[[T], int]) -> list[T]:
    """Stripe's list order: newest first, and of two made in the same second the later one
    (`items` come in the order they were made)."""
    return sorted(reversed(list(items)), key=created, reverse=True)
