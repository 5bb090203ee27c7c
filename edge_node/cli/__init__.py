"""The `edge-node` command and the composition root: the daemon, the supervisor of
`serve --workers N`, backup, restore and status.

The only package that imports both the request path (edge_node.*) and `sync`.
"""
