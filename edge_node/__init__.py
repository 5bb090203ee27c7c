"""edge-node: a self-hosted edge daemon for metered, multi-tenant APIs."""

__version__ = "0.1.0"
