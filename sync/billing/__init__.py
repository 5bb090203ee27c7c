"""Billing: usage read from the queue planned into meter-event batches, the ledger that owns
their state, sending them to Stripe, provisioning tenants as Stripe customers, and
reconciliation.

Imports sync.stripe (the adapter), edge_node.usage, edge_node.queue and edge_node.tenants.
"""
