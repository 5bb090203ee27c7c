"""Fleet-wide allowances: leases claimed from the central database (docs/quotas.md)."""
