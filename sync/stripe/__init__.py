"""Stripe: the adapter (the only code importing `stripe`), its Idempotency-Keys, the billing
catalog `stripe bootstrap` made, and the stand-in our tests run instead of Stripe.

Imports the edge foundations and edge_node.tenants (the Stripe ids of a tenant).
"""
