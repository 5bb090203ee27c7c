"""Test support for Stripe: a stand-in in another process, driven through its admin API."""

from __future__ import annotations

import json
import re
import selectors
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

from edge_node.tenants.model import IssuedKey, Tenant
from edge_node.tenants.registry import TenantRegistry
from sync.stripe.standin import DEFAULT_API_KEY

STANDIN_LISTENING = re.compile(r"^stripe stand-in listening on (http://127\.0\.0\.1:\d+)$")


@dataclass
class StandinProcess:
    """`python -m sync.stripe.standin` running in its own process, for daemons in theirs."""

    process: subprocess.Popen[str]
    url: str

    @classmethod
    def start(cls, *api_keys: str) -> StandinProcess:
        keys = [arg for key in (api_keys or (DEFAULT_API_KEY,)) for arg in ("--api-key", key)]
        process = subprocess.Popen(
            [sys.executable, "-m", "sync.stripe.standin", "--port", "0", *keys],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=15), "the stand-in never announced its URL"
        match = STANDIN_LISTENING.match(process.stdout.readline().strip())
        assert match, "the stand-in announced something else"
        return cls(process, match.group(1))

    def admin(self, path: str, document: dict[str, Any] | None = None) -> Any:
        """GET (no document) or POST a JSON document to /_standin/<path>; the JSON answer."""
        request = urllib.request.Request(
            f"{self.url}/_standin/{path}",
            data=None if document is None else json.dumps(document).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if document is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


def create_tenant(registry: TenantRegistry, name: str, **options: Any) -> tuple[Tenant, IssuedKey]:
    """A tenant with a billing email, as `tenants create --email` makes it: Stripe sends
    invoices by email (the default collection method), so provisioning needs one."""
    made = registry.create_tenant(name, **options)
    registry.contacts().set_email(made[0].tenant_id, f"billing+{name}@example.com")
    return made
