"""Abuse detection on the request path: per-tenant and per-IP spikes, and blocking spiking IPs.

Every request is counted against its client IP (edge_node.web.client_ip) and, once its
credential is admitted for the tenant in its path, against that tenant
(edge_node.abuse.spikes). A spike increments `edge_node_abuse_spikes_total{scope}` and logs one
structured warning (`event=abuse.spike`). With `abuse.block` on, a spiking IP outside
`abuse.allow_cidrs` is blocked for `abuse.block_seconds`: its requests, the one that tripped
the block included, get 403 `ip-blocked` with Retry-After until the block expires or an
operator lifts it (edge_node.abuse.blocks). Tenants are never blocked here: a tenant's volume is
its rate limit's business; its spike is a signal (a leaked key, a runaway client).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from edge_node.abuse.blocks import BlockList, BlockStore, IpBlock
from edge_node.abuse.spikes import Spike, SpikeDetector
from edge_node.clock import format_us, now_us
from edge_node.config import AbuseConfig
from edge_node.errors import Forbidden
from edge_node.web.client_ip import ClientAddresses, membership, parse_networks

log = logging.getLogger(__name__)

SPIKE_REASON = "spike"


class AbuseMetrics:
    """The abuse detector's Prometheus metrics, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        spikes = Counter(
            "edge_node_abuse_spikes_total",
            "Request spikes detected: a short window far above its baseline rate, by what"
            " spiked (tenant or ip).",
            ["scope"],
            registry=registry,
        )
        self.tenant_spikes = spikes.labels(scope="tenant")
        self.ip_spikes = spikes.labels(scope="ip")
        self.ip_blocks = Counter(
            "edge_node_abuse_ip_blocks_total",
            "Client IPs blocked after a spike.",
            registry=registry,
        )
        self.blocked_requests = Counter(
            "edge_node_abuse_blocked_requests_total",
            "Requests refused with 403 ip-blocked.",
            registry=registry,
        )
        self.active_blocks = Gauge(
            "edge_node_abuse_active_blocks",
            "Client IPs this process holds blocked now.",
            registry=registry,
        )


class AbuseGuard:
    """Spike detectors, the block list and the blocking policy for one app."""

    def __init__(
        self,
        config: AbuseConfig,
        store: BlockStore,
        metrics: AbuseMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.addresses = ClientAddresses(config.trusted_proxies)
        self.allowed = membership(parse_networks(config.allow_cidrs, "abuse.allow_cidrs"))
        self.blocks = BlockList(store, check_interval=config.lift_check_interval_seconds)
        self.ips = self._detector()
        self.tenants = self._detector()
        metrics.active_blocks.set_function(lambda: len(self.blocks))

    def _detector(self) -> SpikeDetector:
        return SpikeDetector(
            window=self.config.window_seconds,
            half_life=self.config.baseline_half_life_seconds,
            factor=self.config.spike_factor,
            min_rate=self.config.min_rate_per_second,
            max_keys=self.config.max_tracked,
        )

    def admit(self, request: web.Request) -> float:
        """Refuse a blocked client, else count its request; the clock reading it used."""
        ip = self.addresses.of(request)
        now = self.clock()
        if not ip:  # no peer address (a Unix socket): nothing to count or block
            return now
        block = self.blocks.blocked(ip, now)
        if block is None and self.observe_ip(ip, now):  # this very request tripped a block
            block = self.blocks.blocked(ip, now)
        if block is not None:
            self.metrics.blocked_requests.inc()
            raise _blocked(block)
        return now

    def observe_ip(self, ip: str, now: float) -> bool:
        """Count a request of `ip`; True when its spike has just blocked it."""
        spike = self.ips.observe(ip, now)
        if spike is None:
            return False
        self.metrics.ip_spikes.inc()
        blocked = self.config.block and not self.allowed(ip)
        _log_spike("ip", spike, blocked=blocked)
        if blocked:
            self.blocks.add(_block_for(spike, self.config.block_seconds))
            self.metrics.ip_blocks.inc()
        return blocked

    def observe_tenant(self, tenant_id: str, now: float) -> None:
        spike = self.tenants.observe(tenant_id, now)
        if spike is not None:
            self.metrics.tenant_spikes.inc()
            _log_spike("tenant", spike, blocked=False)


def _block_for(spike: Spike, seconds: int) -> IpBlock:
    now = now_us()
    return IpBlock(
        spike.key,
        SPIKE_REASON,
        now,
        now + seconds * 1_000_000,
        spike.rate_per_second,
        spike.baseline_per_second,
    )


def _blocked(block: IpBlock) -> Forbidden:
    retry_after = max(1, math.ceil((block.expires_at - now_us()) / 1_000_000))
    return Forbidden(
        f"requests from {block.ip} are blocked until {format_us(block.expires_at)}: its rate"
        f" spiked to {block.rate_per_second:.1f}/s against a baseline of"
        f" {block.baseline_per_second:.1f}/s",
        slug="ip-blocked",
        title="Client address blocked",
        headers={"Retry-After": str(retry_after)},
    )


def _log_spike(scope: str, spike: Spike, *, blocked: bool) -> None:
    log.warning(
        "request spike: %s %s at %.1f/s against a baseline of %.1f/s%s",
        scope,
        spike.key,
        spike.rate_per_second,
        spike.baseline_per_second,
        "; blocked" if blocked else "",
        extra={
            "event": "abuse.spike",
            "scope": scope,
            "key": spike.key,
            "rate_per_second": round(spike.rate_per_second, 3),
            "baseline_per_second": round(spike.baseline_per_second, 3),
            "blocked": blocked,
        },
    )
