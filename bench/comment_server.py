"""A server for the encryption benchmark: the real edge-node app, comments sealed or plain.

`python -m bench.comment_server --data-dir DIR --mode sealed|plain --credentials FILE`
serves the daemon's own application (router, rate limit, meter, tenant stores) on
127.0.0.1, on a free port announced as "... listening on http://127.0.0.1:PORT". In
`sealed` mode comments are sealed exactly as the shipped node seals them; in `plain` mode
the key ring is swapped for one whose "seal" is the comment's UTF-8 bytes, so the two
servers differ by the AES-256-GCM work alone. It writes the tenant id and API key to FILE
and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

import uvloop
from aiohttp import web

from edge_node.cli.daemon import queue_directory
from edge_node.config import Config, load_config
from edge_node.crypto.keystore import Keyring
from edge_node.crypto.sealing import TenantSealer
from edge_node.http.app import NodeStorage, create_app
from edge_node.rating.store import TenantStores
from edge_node.usage.meter import open_meter
from edge_node.web.limits import LimitedAppRunner

RATE_LIMIT_PER_MINUTE = 100_000_000


class PlainSealer(TenantSealer):
    """Stores the comment's UTF-8 bytes as they are: the cost of encryption taken away."""

    def seal(self, rating_id: str, comment: str | None) -> bytes | None:
        return None if comment is None else comment.encode()

    def open(self, rating_id: str, sealed: bytes | None) -> str | None:
        return None if sealed is None else sealed.decode()


class PlainKeyring(Keyring):
    def sealer(self, tenant_id: str) -> TenantSealer:
        def no_key() -> tuple[str, object]:
            raise AssertionError("the plain sealer uses no key")

        return PlainSealer(tenant_id, no_key, lambda key_id: None)  # type: ignore[arg-type]


def prepare(data_dir: Path, mode: str, credentials: Path) -> tuple[Config, NodeStorage]:
    """The node's configuration and storage, with one tenant whose key goes to `credentials`."""
    config = load_config(
        overrides={"data_dir": str(data_dir), "node_id": f"bench-{mode}", "server.port": 0}
    )
    storage = NodeStorage.open(config)
    if mode == "plain":
        storage.stores.close()
        plain = PlainKeyring(data_dir / "keys")
        storage = NodeStorage(
            storage.node_database,
            storage.registry,
            TenantStores(data_dir / "tenants", node_id=config.node_id, keyring=plain),
        )
    tenant, key = storage.registry.create_tenant(
        "bench", rate_limit_per_minute=RATE_LIMIT_PER_MINUTE
    )
    credentials.write_text(json.dumps({"tenant_id": tenant.tenant_id, "api_key": key.api_key}))
    return config, storage


async def serve(config: Config, storage: NodeStorage, mode: str) -> None:
    meter = await open_meter(config.meter, config.queue, queue_directory(config), config.node_id)
    runner = LimitedAppRunner(create_app(config, storage, meter), config.limits, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    print(f"comment server ({mode}) listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await meter.close()
    storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("sealed", "plain"), required=True)
    parser.add_argument("--credentials", type=Path, required=True)
    args = parser.parse_args()
    config, storage = prepare(args.data_dir, args.mode, args.credentials)
    uvloop.run(serve(config, storage, args.mode))


if __name__ == "__main__":
    main()
