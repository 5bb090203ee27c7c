"""Run the Stripe stand-in as a process: `python -m sync.stripe.standin --port P`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from sync.stripe.standin.server import DEFAULT_API_KEY, StripeStandin


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync.stripe.standin", description="A Stripe stand-in for tests."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=f"secret key accepted (repeatable; default {DEFAULT_API_KEY})",
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.api_keys or [DEFAULT_API_KEY]))
    return 0


async def _serve(host: str, port: int, api_keys: list[str]) -> None:
    standin = StripeStandin(api_keys)
    url = await standin.start(host, port)
    print(f"stripe stand-in listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.stop()


if __name__ == "__main__":
    sys.exit(main())
