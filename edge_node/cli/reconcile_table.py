"""The reconcile document (sync/billing/reconcile.py) as the table `edge-node billing
reconcile` prints: one row per tenant and billing period, then what was set aside."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("served", "served"),
    ("queued", "queued"),
    ("sent", "sent"),
    ("confirmed", "confirmed"),
    ("invoiced", "invoiced"),
    ("carried_forward", "carried fwd"),
    ("carried_in", "carried in"),
    ("included_in_flat_fee", "flat fee"),
    ("set_aside", "set aside"),
    ("difference", "difference"),
    ("stripe_difference", "stripe diff"),
)


def render_statements(document: dict[str, Any]) -> str:
    """The statements, the batches set aside with their reasons, and the verdict."""
    header = ["tenant", "period", "invoice", *(label for _, label in COLUMNS)]
    rows = [header]
    for statement in document["periods"]:
        period = statement["period"]
        span = (
            f"{period['start'][:16]} .. {period['end'][:16]}"
            if period["start"] is not None
            else "outside known periods"
        )
        invoice = statement["invoice"]
        rows.append(
            [
                statement["tenant_id"],
                span,
                "-" if invoice is None else invoice["status"],
                *(_figure(statement[key]) for key, _ in COLUMNS),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if not document["stripe_read"]:
        lines.append("invoiced: not read (Stripe is not configured)")
    for aside in document["set_aside"]:
        lines.append(
            f"set aside: {aside['units']} units of tenant {aside['tenant_id']} from"
            f" {aside['window_start']}: {aside['reason']}"
        )
    if document["unreadable_queue_records"]:
        lines.append(f"unreadable queue records: {document['unreadable_queue_records']}")
    lines.append("in order" if document["ok"] else "NOT in order: see the rows above")
    return "\n".join(lines) + "\n"


def _figure(value: int | None) -> str:
    return "-" if value is None else str(value)
