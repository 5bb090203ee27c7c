"""The tenant's usage API: what it used in its current and previous billing periods, per
operation, and how far each unit is on its way to an invoice.

`model` is the answer (no I/O) and `UsageSource`, what the answer is read from: node.sqlite's
billing ledger and periods, and the usage queues, which billing owns (sync/billing/usage_view.py
implements it; the composition root passes it in, as the request path never imports sync).
`handlers` is the route, GET /v1/tenants/{tenant_id}/usage.
"""
