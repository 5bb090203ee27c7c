"""Abuse detection: per-IP and per-tenant spikes, and client IPs blocked for abuse (the
`ip_blocks` table of node.sqlite, which it owns).

Imports web (the client address) and the foundations.
"""
