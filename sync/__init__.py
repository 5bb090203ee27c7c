"""Everything that talks to the outside world: the central PostgreSQL and Stripe.

Nothing on the request path imports this package; it may import `edge_node`.
"""
