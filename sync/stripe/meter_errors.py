"""Stripe's asynchronous meter error reports, as the node reads them from a fetched thin event.

Stripe validates meter events after accepting them; invalid ones are dropped and reported in
a `v1.billing.meter.error_report_triggered` event (or `v1.billing.meter.no_meter_found` when
no meter has the event name), delivered as a thin event whose data (`GET
/v2/core/events/{id}`) holds `reason.error_count` and, per error code, `sample_errors` with
each sample's `request.identifier`: the meter event identifiers Stripe dropped. Only samples
are named, so a report may count more errors than it identifies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MeterError:
    """One meter event Stripe dropped: its identifier, the error code and message."""

    identifier: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MeterErrorReport:
    """A fetched report: its event, how many errors it counts, and those it names."""

    event_id: str
    type: str
    error_count: int
    errors: tuple[MeterError, ...]

    @property
    def unnamed(self) -> int:
        """Errors counted but not named by a sample (their identifiers are unknown)."""
        return max(0, self.error_count - len(self.errors))


def report_from(event: Mapping[str, Any]) -> MeterErrorReport:
    """The report in a fetched v2 event (as a dict); ValueError when it has no reason."""
    reason = (event.get("data") or {}).get("reason")
    if not isinstance(reason, Mapping):
        raise ValueError(f"event {event.get('id')} has no data.reason")
    errors: list[MeterError] = []
    for error_type in reason.get("error_types") or []:
        code = str(error_type.get("code") or "unknown")
        for sample in error_type.get("sample_errors") or []:
            identifier = (sample.get("request") or {}).get("identifier")
            if identifier:
                errors.append(
                    MeterError(str(identifier), code, str(sample.get("error_message") or ""))
                )
    return MeterErrorReport(
        str(event["id"]), str(event.get("type")), int(reason.get("error_count") or 0), tuple(errors)
    )
