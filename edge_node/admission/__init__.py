"""Admission: which tenant a request is for and whether it may be served: credentials (API keys,
JWTs), the tenant's standing, its role, and its rate limit (per process or shared by workers).

Imports tenants, usage, web and the foundations.
"""
