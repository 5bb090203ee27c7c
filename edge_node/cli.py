"""The `edge-node` command: serve the API and manage tenants and keys, printing JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from edge_node import __version__
from edge_node.config import Config, load_config
from edge_node.daemon import run, serve
from edge_node.errors import ConfigError, RegistryError
from edge_node.ids import is_uuid
from edge_node.rating.store import TenantStores
from edge_node.registry import PLANS, ROLES, TenantRegistry

EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: systemd and operators read it as "fix the config"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-node", description="Self-hosted edge daemon for metered, multi-tenant APIs."
    )
    parser.add_argument("--version", action="version", version=f"edge-node {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--data-dir", metavar="DIR", help="data directory (default ./var or EDGE_NODE_DATA_DIR)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_cmd = commands.add_parser("serve", help="run the daemon")
    serve_cmd.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port to listen on (default 8080)")
    serve_cmd.set_defaults(handler=_serve)

    tenants = commands.add_parser("tenants", help="manage tenants").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = tenants.add_parser("create", help="register a tenant and print its first API key")
    create.add_argument("--name", required=True)
    create.add_argument("--plan", choices=PLANS, default="payg")
    create.add_argument("--rate-limit", type=int, metavar="PER_MINUTE")
    create.set_defaults(handler=_tenants_create)
    tenants.add_parser("list", help="list tenants").set_defaults(handler=_tenants_list)
    for action, status in (("suspend", "suspended"), ("resume", "active")):
        cmd = tenants.add_parser(action, help=f"mark a tenant {status}")
        cmd.add_argument("tenant_id")
        cmd.set_defaults(handler=_tenants_set_status, status=status)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    key_create = keys.add_parser("create", help="issue a new API key for a tenant")
    key_create.add_argument("tenant_id")
    key_create.add_argument("--role", choices=ROLES, default="admin")
    key_create.set_defaults(handler=_keys_create)
    key_revoke = keys.add_parser("revoke", help="revoke an API key by its key id")
    key_revoke.add_argument("key_id")
    key_revoke.set_defaults(handler=_keys_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    for flag, key in (("host", "server.host"), ("port", "server.port")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    try:
        config = load_config(args.config, overrides=overrides)
        handler: Callable[[Config, argparse.Namespace], int] = args.handler
        return handler(config, args)
    except ConfigError as exc:
        print(f"edge-node: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except RegistryError as exc:
        print(f"edge-node: {exc}", file=sys.stderr)
        return 1


def _serve(config: Config, args: argparse.Namespace) -> int:
    run(serve(config))
    return 0


def _emit(document: Any) -> int:
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    return 0


def _registry(config: Config) -> TenantRegistry:
    return TenantRegistry.open(config.data_path, busy_timeout_ms=config.storage.busy_timeout_ms)


def _tenants_create(config: Config, args: argparse.Namespace) -> int:
    if args.rate_limit is not None and args.rate_limit < 1:
        raise ConfigError(f"--rate-limit must be a positive integer, got {args.rate_limit}")
    if not 1 <= len(args.name) <= 200:
        raise RegistryError("--name must be 1 to 200 characters")
    registry = _registry(config)
    try:
        tenant, key = registry.create_tenant(
            args.name, plan=args.plan, rate_limit_per_minute=args.rate_limit
        )
    finally:
        registry.close()
    stores = TenantStores(config.data_path / "tenants", node_id=config.node_id)
    try:
        stores.get(tenant.tenant_id)  # create the tenant's file and schema now, not on first use
    finally:
        stores.close()
    return _emit(
        {**tenant.to_json(), "api_key": key.api_key, "key_id": key.key_id, "role": key.role}
    )


def _tenants_list(config: Config, args: argparse.Namespace) -> int:
    registry = _registry(config)
    try:
        return _emit([tenant.to_json() for tenant in registry.list_tenants()])
    finally:
        registry.close()


def _tenants_set_status(config: Config, args: argparse.Namespace) -> int:
    _require_uuid(args.tenant_id)
    registry = _registry(config)
    try:
        return _emit(registry.set_status(args.tenant_id, args.status).to_json())
    finally:
        registry.close()


def _keys_create(config: Config, args: argparse.Namespace) -> int:
    _require_uuid(args.tenant_id)
    registry = _registry(config)
    try:
        return _emit(registry.create_key(args.tenant_id, args.role).to_json())
    finally:
        registry.close()


def _keys_revoke(config: Config, args: argparse.Namespace) -> int:
    registry = _registry(config)
    try:
        return _emit(registry.revoke_key(args.key_id))
    finally:
        registry.close()


def _require_uuid(tenant_id: str) -> None:
    if not is_uuid(tenant_id):
        raise RegistryError(f"{tenant_id!r} is not a tenant id (a UUID)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
