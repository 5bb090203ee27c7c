"""Stripe: the adapter (`gateway`, `bootstrap`, `client`, `errors`: the only code importing
`stripe`), a customer's billing `periods`, its Idempotency-Keys, the billing catalog `stripe
bootstrap` made, and the stand-in our tests run instead of Stripe.

Imports the edge foundations and edge_node.tenants (the Stripe ids of a tenant).
"""
