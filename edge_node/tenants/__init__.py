"""Tenants: the registry in node.sqlite, API keys, roles and plans, billing standing, and the
Stripe events that change it (webhooks and their copies shared through the central database)
or that the sync worker applies (thin events).

The only code that reads or writes the `tenants`, `api_keys`, `registry_outbox`,
`webhook_events`, `shared_billing_events` and `stripe_thin_events` tables (their schema:
edge_node.tenants.schema), of `tenant_emails` (edge_node.tenants.contacts), and of
`tenant_periods` and `tenant_invoices` (edge_node.tenants.billing_periods).
Imports the foundations and edge_node.web (the webhook handler); never admission, rating,
the HTTP server or `sync`.
"""
