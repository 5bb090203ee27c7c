"""A tenant's billing email: where Stripe sends its invoices (`tenants create --email`,
`tenants update --email`).

Kept in node.sqlite's `tenant_emails` (a component of its own, `tenant_contacts`): the
address as last set here, and the address Stripe was last given for the tenant's customer.
The sync worker gives Stripe every address that differs from what Stripe was last given
(sync/billing/provisioning.py), so an update made while Stripe is unreachable reaches it
later. The address stays on the node where it was set: it is not replicated.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from edge_node import sqlite
from edge_node.clock import now_us
from edge_node.errors import RegistryError
from edge_node.tenants.schema import require_tenant

COMPONENT = "tenant_contacts"
MIGRATIONS = (
    """
    CREATE TABLE tenant_emails (
        tenant_id TEXT PRIMARY KEY,
        email TEXT NOT NULL,
        stripe_email TEXT,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
)
MAX_EMAIL_LENGTH = 512  # Stripe's limit for a customer's email
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+")


def migrate(conn: sqlite3.Connection) -> None:
    sqlite.migrate(conn, MIGRATIONS, component=COMPONENT)


def check_email(email: str) -> str:
    """`email` if it is an address Stripe takes (one @, a dotted domain, no spaces, at most
    512 characters); RegistryError otherwise."""
    if len(email) > MAX_EMAIL_LENGTH or _EMAIL.fullmatch(email) is None:
        raise RegistryError(f"--email {email!r} is not an email address (name@domain.tld)")
    return email


@dataclass(frozen=True, slots=True)
class EmailToSend:
    """A tenant's address that its Stripe customer does not have yet."""

    tenant_id: str
    customer_id: str
    email: str


class TenantContacts:
    """The tenants' billing emails on an open node.sqlite."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        migrate(conn)
        self._conn = conn

    def set_email(self, tenant_id: str, email: str) -> None:
        """Set the tenant's address (checked); Stripe is given it by the sync worker."""
        check_email(email)
        with sqlite.transaction(self._conn):
            require_tenant(self._conn, tenant_id)
            self._conn.execute(
                "INSERT INTO tenant_emails (tenant_id, email, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (tenant_id) DO UPDATE SET email = excluded.email,"
                " updated_at = excluded.updated_at",
                (tenant_id, email, now_us()),
            )

    def email(self, tenant_id: str) -> str | None:
        row = self._conn.execute(
            "SELECT email FROM tenant_emails WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def to_send(self) -> list[EmailToSend]:
        """Addresses of tenants with a Stripe customer that Stripe was not given yet."""
        rows = self._conn.execute(
            "SELECT e.tenant_id, t.stripe_customer_id, e.email FROM tenant_emails e"
            " JOIN tenants t ON t.tenant_id = e.tenant_id"
            " WHERE t.stripe_customer_id IS NOT NULL AND e.stripe_email IS NOT e.email"
            " ORDER BY e.updated_at, e.tenant_id"
        ).fetchall()
        return [EmailToSend(*row) for row in rows]

    def sent(self, tenant_id: str, email: str) -> None:
        """Stripe has `email` for the tenant's customer (unless it changed again since)."""
        with sqlite.transaction(self._conn):
            self._conn.execute(
                "UPDATE tenant_emails SET stripe_email = email WHERE tenant_id = ? AND email = ?",
                (tenant_id, email),
            )

    def pending(self, tenant_id: str) -> bool:
        """Whether the tenant's address still waits to be given to Stripe."""
        row = self._conn.execute(
            "SELECT stripe_email IS NOT email FROM tenant_emails WHERE tenant_id = ?",
            (tenant_id,),
        ).fetchone()
        return bool(row and row[0])
