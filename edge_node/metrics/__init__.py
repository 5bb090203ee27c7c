"""Prometheus metrics of one node process: request counts kept as plain numbers on the event
loop, and what is read from the rest of the node when scraped.

Imports the concepts it reports on (queue, tenants, admission) and the foundations.
"""
