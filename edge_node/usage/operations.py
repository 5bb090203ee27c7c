"""The operation table: every billable operation, what it is, and the units it bills by default.

Made from it: the operations the meter knows and their units, the `[meter.units]` settings
and their documentation (edge_node.config.storage), the names the handlers meter under
(edge_node.rating.handlers) and the usage operation each billed answer declares in the
OpenAPI document. An operation's name is written into every usage event it bills, so a name,
once shipped, never changes. This module imports nothing of the project, so that the
configuration may read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Operation:
    """A billable operation: its `name` in usage events, `what` it is (a phrase the
    configuration docs complete: "Units billed for `score.read`, an item score read."), and
    the units it bills unless `[meter.units]` says otherwise."""

    name: str
    what: str
    default_units: int = 1

    @property
    def setting(self) -> str:
        """Its key under `[meter.units]`: the name with its dot as an underscore."""
        return self.name.replace(".", "_")


RATING_CREATE = Operation("rating.create", "a POST that created a rating")
RATING_UPDATE = Operation("rating.update", "a POST that replaced a rating")
RATING_LIST = Operation("rating.list", "a page of ratings")
SCORE_READ = Operation("score.read", "an item score read")
RATING_DELETE = Operation("rating.delete", "a deleted rating")
USER_ERASE = Operation("user.erase", "a user erasure")

OPERATIONS = (RATING_CREATE, RATING_UPDATE, RATING_LIST, SCORE_READ, RATING_DELETE, USER_ERASE)
