"""The periods billing read from Stripe, kept in a real node.sqlite for what answers locally."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_node.tenants import billing_periods
from edge_node.tenants.registry import TenantRegistry
from sync.billing.ledger import BillingLedger
from sync.billing.plan import MeterEventBatch, PlannedRange
from sync.stripe.periods import OpenDraft, SubscriptionPeriods

MONTH = 30 * 86_400
P1, P2, P3 = 1_700_000_000, 1_700_000_000 + MONTH, 1_700_000_000 + 2 * MONTH
GRACE = 3600


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[tuple[BillingLedger, str]]:
    """A ledger with one batch of a tenant whose customer is cus_1."""
    registry = TenantRegistry.open(tmp_path)
    tenant, _ = registry.create_tenant("t")
    registry.set_stripe_customer(tenant.tenant_id, "cus_1")
    opened = BillingLedger.open(tmp_path)
    batch = MeterEventBatch("id-1", tenant.tenant_id, "requests", P1, 3, 3, "worker-0", 1, 3)
    opened.record_plan(PlannedRange("worker-0", 1, 3, (batch,)), 1)
    yield opened, tenant.tenant_id
    opened.close()
    registry.close()


def read(tmp_path: Path, tenant_id: str) -> list[billing_periods.KnownPeriod]:
    with sqlite3.connect(tmp_path / "node.sqlite") as conn:
        return billing_periods.latest(conn, tenant_id, count=5)


class TestKnownPeriods:
    def test_a_period_is_kept_open_then_draft_then_final(
        self, ledger: tuple[BillingLedger, str], tmp_path: Path
    ) -> None:
        """Read as current, a period has no finalization; once ended its draft's deadline is
        kept; read again without its draft listed, it is final as of that reading. The first
        invoice of a subscription, which covers no time, is not a period."""
        billing, tenant = ledger
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P1, P2), P1 + 10)
        assert [(p.start, p.end, p.finalizes_at) for p in read(tmp_path, tenant)] == [
            (P1, P2, None)
        ]
        assert billing.ended_unread(P2 + 1) == ["cus_1"]
        drafts = (OpenDraft(P1, P2, P2 + GRACE), OpenDraft(P1, P1, P1 + GRACE))
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P2, P3, drafts), P2 + 60)
        second, first = read(tmp_path, tenant)
        assert (second.start, second.finalizes_at) == (P2, None)
        assert (first.finalizes_at, first.invoice_final(P2 + 60)) == (P2 + GRACE, False)
        assert billing.ended_unread(P2 + 60) == []
        later = P2 + 2 * GRACE
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P2, P3), later)
        second, first = read(tmp_path, tenant)
        assert first.finalizes_at == P2 + GRACE  # its deadline stands: already past
        assert first.invoice_final(later)

    def test_an_invoice_a_webhook_reports_finalized_makes_its_period_final_at_once(
        self, ledger: tuple[BillingLedger, str], tmp_path: Path
    ) -> None:
        """Known from a reading only as the current period, then reported by
        `invoice.finalized` before the flush reads it again: final from the event's time, the
        one place the periods are kept holding both."""
        billing, tenant = ledger
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P1, P2), P1 + 10)
        facts = billing_periods.PeriodFacts("sub", P1, P2, "in_1", "open", None)
        with sqlite3.connect(tmp_path / "node.sqlite", isolation_level=None) as conn:
            outcome = billing_periods.record_period(
                conn,
                tenant,
                tenant_subscription="sub",
                event_id="evt_1",
                created=P2 + 300,
                facts=facts,
                now_us=(P2 + 301) * 1_000_000,
            )
        assert outcome == "applied"
        (period,) = read(tmp_path, tenant)
        assert (period.start, period.finalizes_at) == (P1, P2 + 300)
        assert period.invoice_final(P2 + 300)

    def test_a_period_never_seen_as_draft_is_final_as_of_the_reading_after_it(
        self, ledger: tuple[BillingLedger, str], tmp_path: Path
    ) -> None:
        """An ended period read again with no draft of it listed (finalized between two
        readings) is final from that reading on."""
        billing, tenant = ledger
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P1, P2), P1)
        billing.record_periods("cus_1", SubscriptionPeriods("sub", P1, P2, P3), P2 + 7200)
        _, first = read(tmp_path, tenant)
        assert first.finalizes_at == P2 + 7200

    def test_a_customer_no_batch_names_is_not_kept(
        self, ledger: tuple[BillingLedger, str], tmp_path: Path
    ) -> None:
        """Periods are kept under the tenant of the customer's batches: a customer the
        ledger does not know leaves nothing."""
        billing, _ = ledger
        billing.record_periods("cus_unknown", SubscriptionPeriods("sub", P1, P1, P2), P1)
        with sqlite3.connect(tmp_path / "node.sqlite") as conn:
            assert conn.execute("SELECT count(*) FROM billing_periods").fetchone() == (0,)
