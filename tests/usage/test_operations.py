"""The operation table: one entry per billable operation, each with its own name and setting."""

from __future__ import annotations

import re

from edge_node.usage.operations import OPERATIONS


class TestOperationTable:
    def test_names_and_settings_are_unique(self) -> None:
        """No two entries share a name, or a [meter.units] key (`a.b_c` and `a_b.c` would)."""
        assert len({operation.name for operation in OPERATIONS}) == len(OPERATIONS)
        assert len({operation.setting for operation in OPERATIONS}) == len(OPERATIONS)

    def test_each_entry_is_named_documented_and_billed_by_default(self) -> None:
        """A name is `thing.action` in lower case, `what` is a phrase for the docs, and every
        operation bills at least one unit unless configured otherwise."""
        for operation in OPERATIONS:
            assert re.fullmatch(r"[a-z]+\.[a-z]+", operation.name), operation.name
            assert operation.what
            assert not operation.what.endswith(".")
            assert operation.default_units >= 1
