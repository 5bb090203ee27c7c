"""The HTTP benchmark's catalogue: each measured kind of request, its server and its baseline.

A scenario is data. To measure the daemon under other settings, add one to SCENARIOS with
an `env`: each distinct environment starts its own daemon (bench/servers.py), e.g.

    Scenario("post-rating-meter-off", "daemon", "POST", RATINGS_PATH, body=RATING_BODY,
             env={"EDGE_NODE_METER_ENABLED": "false"}, baseline="baseline-post", target=0.35)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

SCORE_PATH = "/v1/tenants/{tenant_id}/items/{item_id}/score"
RATINGS_PATH = "/v1/tenants/{tenant_id}/ratings"
LIST_PATH = RATINGS_PATH + "?item_id={item_id}&limit=50"
# Each stream's requests come in pairs on one (user, item): half create a rating, half update it.
RATING_BODY = '{"user_id":"bench-{stream}-{pair}","item_id":"item-{slot}","score":{score}}'


@dataclass(frozen=True)
class Scenario:
    """One measured kind of request: what is sent, to which server, started with what env."""

    name: str
    server: Literal["baseline", "daemon"]
    method: str
    path: str  # {tenant_id} and {item_id} are filled in from the server
    body: str | None = None  # a bench.loadgen body template
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment of its server
    baseline: str | None = None  # the scenario whose requests/s this one is divided by
    target: float | None = None  # the least ratio the issue accepts
    credits: bool = False  # sent with an API key made with credits (each request spends one)

    @property
    def server_key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.server, tuple(sorted(self.env.items()))


METER_OFF = {"EDGE_NODE_METER_ENABLED": "false"}
BATCHED = {"EDGE_NODE_METER_DURABILITY": "batched"}
METRICS_OFF = {"EDGE_NODE_METRICS_ENABLED": "false"}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline-get", "baseline", "GET", SCORE_PATH),
    Scenario("get-score", "daemon", "GET", SCORE_PATH, baseline="baseline-get", target=0.50),
    Scenario("baseline-post", "baseline", "POST", RATINGS_PATH, body=RATING_BODY),
    Scenario("baseline-list", "baseline", "GET", LIST_PATH),
    Scenario("list-ratings", "daemon", "GET", LIST_PATH, baseline="baseline-list"),
    Scenario(
        "post-rating",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        baseline="baseline-post",
        target=0.35,
    ),
    # An API key with credits: every request spends one in credits.sqlite (synchronous=FULL),
    # against the same read with a key without credits.
    Scenario("get-score-credits", "daemon", "GET", SCORE_PATH, baseline="get-score", credits=True),
    # Batched durability: the response does not wait for its event's fsync.
    Scenario("get-score-batched", "daemon", "GET", SCORE_PATH, env=BATCHED, baseline="get-score"),
    # Metering's cost (issue: strict may cost at most 15% against metering off).
    Scenario(
        "get-score-meter-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env=METER_OFF,
        baseline="baseline-get",
        target=0.50,
    ),
    Scenario(
        "post-rating-meter-off",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        env=METER_OFF,
        baseline="baseline-post",
        target=0.35,
    ),
    Scenario(
        "post-rating-batched",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        env=BATCHED,
        baseline="post-rating-meter-off",
        target=0.85,
    ),
    Scenario(
        "post-rating-strict",
        "daemon",
        "POST",
        RATINGS_PATH,
        body=RATING_BODY,
        baseline="post-rating-meter-off",
        target=0.85,
    ),
    # The abuse guard's cost on the request path (client IP, block lookup, two spike
    # counters): the default daemon against the same with abuse.enabled off.
    Scenario(
        "get-score-abuse-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env={"EDGE_NODE_ABUSE_ENABLED": "false"},
        baseline="baseline-get",
    ),
    Scenario(
        "get-score-abuse-on",
        "daemon",
        "GET",
        SCORE_PATH,
        baseline="get-score-abuse-off",
        target=0.95,
    ),
    # The request path's cost of Prometheus metrics (docs/metrics.md): the same score read
    # with metrics.enabled off, then on (the default), the second read against the first.
    Scenario(
        "get-score-metrics-off",
        "daemon",
        "GET",
        SCORE_PATH,
        env=METRICS_OFF,
        baseline="baseline-get",
        target=0.50,
    ),
    Scenario(
        "get-score-metrics-on",
        "daemon",
        "GET",
        SCORE_PATH,
        baseline="get-score-metrics-off",
        target=0.95,
    ),
)


def select_scenarios(names: str | None) -> list[Scenario]:
    """The named scenarios, in SCENARIOS order, with the baselines they are divided by."""
    known = {scenario.name: scenario for scenario in SCENARIOS}
    wanted = {name.strip() for name in (names or ",".join(known)).split(",") if name.strip()}
    unknown = wanted - known.keys()
    if unknown:
        raise SystemExit(f"bench: unknown scenarios {sorted(unknown)}; choose from {list(known)}")
    wanted |= {base for name in wanted if (base := known[name].baseline)}
    return [scenario for scenario in SCENARIOS if scenario.name in wanted]
