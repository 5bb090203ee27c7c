"""Usage: the operation table, the usage-event codec every reader uses, the meter that turns a
served billable request into a usage event on the durable queue, and served counts.

Imports edge_node.queue and the foundations; never admission, rating, HTTP or `sync`.
"""
