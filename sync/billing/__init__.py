"""Billing: usage read from the queue planned into meter-event batches, the ledger that owns
their state, sending them to Stripe, provisioning tenants as Stripe customers,
reconciliation, and the source of the tenants' usage API (`usage_view`).

Imports sync.stripe (the adapter), edge_node.usage, edge_node.queue, edge_node.tenants and
edge_node.tenant_usage (the answer `usage_view` gives).
"""
