"""The rating domain: ratings, item scores, and the validation every input passes before storage."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from edge_node.clock import format_us
from edge_node.errors import BadRequest, field_error
from edge_node.ids import is_uuid

MAX_ID_LENGTH = 128
MAX_COMMENT_LENGTH = 2000
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
RATING_FIELDS = frozenset({"user_id", "item_id", "score", "comment"})
_CURSOR_VERSION = 1
_SQLITE_INTEGERS = range(-(2**63), 2**63)  # a cursor position past these cannot be bound
# Ids are printable text: any character but the C0 and C1 control characters (Unicode Cc),
# which would let an id forge log lines or confuse terminals. The OpenAPI pattern says the same.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")
ID_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f]+$"


@dataclass(frozen=True, slots=True)
class RatingInput:
    """A validated rating as a client submits it."""

    user_id: str
    item_id: str
    score: int
    comment: str | None

    @property
    def key(self) -> tuple[str, str]:
        return self.user_id, self.item_id


@dataclass(frozen=True, slots=True)
class Rating:
    id: str
    tenant_id: str
    user_id: str
    item_id: str
    score: int
    comment: str | None
    created_at: int
    updated_at: int
    comment_unreadable: bool = False  # a sealed comment this node cannot open

    def to_json(self) -> dict[str, Any]:
        document = {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "score": self.score,
            "comment": self.comment,
            "created_at": format_us(self.created_at),
            "updated_at": format_us(self.updated_at),
        }
        if self.comment_unreadable:
            document["comment_unreadable"] = True
        return document


@dataclass(frozen=True, slots=True)
class ItemScore:
    item_id: str
    count: int
    total: int
    histogram: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        s1, s2, s3, s4, s5 = self.histogram
        return {
            "item_id": self.item_id,
            "count": self.count,
            "average": round(self.total / self.count, 6) if self.count else None,
            "histogram": {"1": s1, "2": s2, "3": s3, "4": s4, "5": s5},
        }


def id_problem(value: object) -> str | None:
    """Why a user or item id is unacceptable, or None when it is fine."""
    if not isinstance(value, str):
        return "must be a string"
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        return f"must be 1 to {MAX_ID_LENGTH} characters"
    if CONTROL_CHARACTERS.search(value):
        return "must not contain control characters"
    return None


def parse_rating(body: object) -> RatingInput:
    """Validate a decoded JSON body; every problem found is reported at once."""
    if not isinstance(body, Mapping):
        raise BadRequest("the body must be a JSON object", slug="invalid-body")
    errors = [field_error(name, "unknown field") for name in body if name not in RATING_FIELDS]
    for name in ("user_id", "item_id"):
        if name not in body:
            errors.append(field_error(name, "is required"))
        elif (reason := id_problem(body[name])) is not None:
            errors.append(field_error(name, reason))
    score = _integral(body.get("score"))
    if "score" not in body:
        errors.append(field_error("score", "is required"))
    elif score is None or not 1 <= score <= 5:
        errors.append(field_error("score", "must be an integer from 1 to 5"))
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT_LENGTH):
        errors.append(
            field_error(
                "comment", f"must be a string of at most {MAX_COMMENT_LENGTH} characters, or null"
            )
        )
    if errors:
        raise BadRequest("the rating is invalid", slug="invalid-body", errors=errors)
    assert score is not None
    return RatingInput(body["user_id"], body["item_id"], score, comment)


def _integral(value: object) -> int | None:
    """JSON Schema's notion of an integer: 4 and 4.0 are both the integer 4; true is not."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def check_id(name: str, value: str) -> str:
    """A user or item id taken from the path or query, or 400."""
    reason = id_problem(value)
    if reason is not None:
        raise BadRequest(
            f"{name} {reason}", slug="invalid-parameter", errors=[field_error(name, reason)]
        )
    return value


def check_uuid(name: str, value: str) -> str:
    """A UUID in canonical lower-case form, or 400."""
    if not is_uuid(value):
        reason = "must be a UUID in canonical form (lower-case hex, 8-4-4-4-12)"
        raise BadRequest(
            f"{name} {reason}", slug="invalid-parameter", errors=[field_error(name, reason)]
        )
    return value


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    # isdigit() alone admits '²' and other non-ASCII digits, which int() rejects or misreads.
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        reason = f"must be an integer from 1 to {MAX_PAGE_SIZE}"
        raise BadRequest(
            f"limit {reason}", slug="invalid-parameter", errors=[field_error("limit", reason)]
        )
    return int(raw)


def encode_cursor(position: tuple[int, str]) -> str:
    """The cursor of a page ending at the rating with this (created_at, id)."""
    created_at, rid = position
    packed = orjson.dumps([_CURSOR_VERSION, created_at, rid])
    return base64.urlsafe_b64encode(packed).rstrip(b"=").decode()


def decode_cursor(raw: str) -> tuple[int, str]:
    """The (created_at, id) position a cursor stands for; 400 for anything we did not issue."""
    try:
        packed = base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
        version, created_at, rid = orjson.loads(packed)
    except (binascii.Error, ValueError, TypeError):
        version = created_at = rid = None
    if (
        version != _CURSOR_VERSION
        or type(created_at) is not int
        or created_at not in _SQLITE_INTEGERS
        or not isinstance(rid, str)
        or not is_uuid(rid)
    ):
        raise BadRequest(
            "cursor is not one this server issued",
            slug="invalid-cursor",
            errors=[field_error("cursor", "unrecognised cursor")],
        )
    return created_at, rid
