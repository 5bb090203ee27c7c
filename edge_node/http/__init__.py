"""The HTTP server: the app factory, its front (request ids, guards, problem answers,
metrics, around the app's routing), the OpenAPI document.

The top of the request path: it assembles the concept packages (admission, abuse, usage,
tenants, rating, metrics) into one aiohttp application. Nothing on the request path imports
it but the composition root (edge_node.cli), and it never imports `sync`.
"""
