"""Binding database roles to tenants in the central schema (tenant_roles, migration 0006).

A role bound to a tenant sees and writes that tenant's rows only, whatever it sets; a role
marked scoped-by-setting is a trusted application role that scopes each transaction with
`SET LOCAL edge_node.tenant_id`; any other role sees no tenant row (docs/sync.md, "Row-level
security"). Only the sync role (or a superuser) can write bindings.

A binding, once made, is not moved by `bind_role`: binding a role that is bound otherwise is
refused, so a mistyped tenant id never hands a role to another tenant. Unbinding is an
operator's DELETE, on purpose.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edge_node.errors import PermanentSyncError
from sync.postgres import on_each_database, translated

if TYPE_CHECKING:
    from sync.postgres import Connection

# quote_ident: the role name is taken as it is spelled, never case-folded nor parsed.
_MISSING = "SELECT to_regrole(quote_ident($1)) IS NULL"
_CURRENT = """
    SELECT tenant_id::text, scoped_by_setting FROM tenant_roles
    WHERE role = to_regrole(quote_ident($1)) FOR UPDATE"""
_INSERT = """
    INSERT INTO tenant_roles (role, tenant_id, scoped_by_setting)
    VALUES (to_regrole(quote_ident($1)), $2::uuid, $3)"""


async def bind_role(connection: Connection, role: str, tenant_id: str | None) -> dict[str, Any]:
    """Bind `role` to `tenant_id`, or mark it scoped by the setting when `tenant_id` is None.

    Returns the binding as JSON-ready data, with `changed` false when it was already so.
    """
    if tenant_id is not None:
        tenant_id = str(uuid.UUID(tenant_id))  # as PostgreSQL prints it, to compare
    with translated(f"binding role {role!r}"):
        async with connection.transaction():
            if await connection.fetchval(_MISSING, role):
                raise PermanentSyncError(f"there is no role named {role!r}: CREATE ROLE it first")
            current = await connection.fetchrow(_CURRENT, role)
            wanted = (tenant_id, tenant_id is None)
            if current is not None and tuple(current) != wanted:
                raise PermanentSyncError(
                    f"role {role!r} is already {_describe(current[0])}; to move it, delete"
                    " its row from tenant_roles first"
                )
            if current is None:
                await connection.execute(_INSERT, role, tenant_id, tenant_id is None)
    return {
        "role": role,
        "tenant_id": tenant_id,
        "scoped_by_setting": tenant_id is None,
        "changed": current is None,
    }


def _describe(tenant_id: str | None) -> str:
    if tenant_id is None:
        return "a trusted application role scoped by edge_node.tenant_id"
    return f"bound to tenant {tenant_id}"


async def bind_role_dsns(
    dsns: Sequence[str], role: str, tenant_id: str | None
) -> list[dict[str, Any]]:
    """Bind the role in each database (every shard, so the binding holds wherever the
    tenant's rows are); one JSON-ready report per database."""
    return await on_each_database(dsns, lambda c: bind_role(c, role, tenant_id))
