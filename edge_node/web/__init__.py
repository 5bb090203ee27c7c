"""What every HTTP handler shares: JSON bodies, problem+json answers, request ids, request
limits, the client address and the TLS context.

Imports only the node's foundations (errors, config, logs); every concept with handlers
(tenants, rating) and the HTTP server (edge_node.http) build on it.
"""
