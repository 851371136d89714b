"""The gateway's Prometheus metrics: one registry per process, rendered by prometheus-client.

Counting must not cost the fan-out: a delivery adds nothing here. The fan-out
keeps plain integers (per message: how many subscribers of each transport it
offered it to), and `Live` reads them, with the connections, watches and the
bus's health, when Prometheus scrapes. What happens once per upstream request,
per published message or per connection uses prometheus-client's own counters.

    buildcast_connections{transport}            open SSE streams and WebSockets
    buildcast_watched_builds, buildcast_pollers watches here, and those this replica polls
    buildcast_upstream_requests_total{endpoint, outcome}
    buildcast_upstream_request_duration_seconds{endpoint}
    buildcast_published_messages_total{type}    snapshots and deltas this replica published
    buildcast_deliveries_total{transport}       messages offered to local subscribers
    buildcast_fanout_latency_seconds            a poll's answer read -> its last local write
    buildcast_slow_consumers_total              clients cut off for falling behind
    buildcast_resumes_total{result}             resumes served as deltas or as a snapshot
    buildcast_view_age_seconds                  how old the stalest view this replica polls is
    buildcast_rejected_requests_total{reason}   requests refused, by protocol code
    buildcast_bus_up                            1 while the bus takes publishes
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.ingest.upstream import ENDPOINTS, OUTCOMES
from gateway.protocol.rules import Code

TRANSPORTS = ("sse", "ws")

REJECTIONS = frozenset(Code) - {Code.UPSTREAM_UNAVAILABLE, Code.INTERNAL}
"""Codes of requests refused as asked (the client's doing or a limit), not failures of ours."""

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: most changes reach their viewers within a few milliseconds of being read."""


@dataclass(slots=True)
class Tally:
    """Plain integers the hot paths bump; read only when Prometheus scrapes."""

    sse: int = 0  # open SSE streams
    ws: int = 0  # open WebSockets
    delivered_sse: int = 0
    delivered_ws: int = 0
    slow_consumers: int = 0


@dataclass(frozen=True, slots=True)
class Readings:
    """What `Live` asks the running gateway for at scrape time."""

    watched: Callable[[], int]
    pollers: Callable[[], int]
    view_age: Callable[[], float]
    bus_up: Callable[[], bool]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tally = Tally()
        registry = self.registry
        self.upstream_requests = Counter(
            "buildcast_upstream_requests",
            "Requests to the Build Graph Service, by endpoint and outcome.",
            ["endpoint", "outcome"],
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "buildcast_upstream_request_duration_seconds",
            "Time from asking the Build Graph Service to its whole answer, by endpoint.",
            ["endpoint"],
            registry=registry,
        )
        self.published = Counter(
            "buildcast_published_messages",
            "Snapshots and deltas this replica's pollers published, by type.",
            ["type"],
            registry=registry,
        )
        self.fanout_latency = Histogram(
            "buildcast_fanout_latency_seconds",
            "From a poll's answer read to the last local write of what it changed.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.resumes = Counter(
            "buildcast_resumes",
            "Clients that came back with a cursor, served the deltas they missed or a snapshot.",
            ["result"],
            registry=registry,
        )
        self.rejected = Counter(
            "buildcast_rejected_requests",
            "Requests refused before any stream started, by the code of the answer.",
            ["reason"],
            registry=registry,
        )
        for endpoint in ENDPOINTS:  # every series from the start: rate() needs a zero
            self.upstream_seconds.labels(endpoint)
            for outcome in OUTCOMES:
                self.upstream_requests.labels(endpoint, outcome)
        for kind in ("snapshot", "delta"):
            self.published.labels(kind)
        for result in ("deltas", "snapshot"):
            self.resumes.labels(result)
        for code in sorted(REJECTIONS):
            self.rejected.labels(code)

    def read(self, readings: Readings) -> None:
        """From now on, scrapes read these values of the running gateway."""
        self.registry.register(Live(self.tally, readings))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Live(Collector):
    """The values read at scrape time: counts the gateway keeps anyway, no work per event."""

    def __init__(self, tally: Tally, readings: Readings) -> None:
        self._tally = tally
        self._readings = readings

    def collect(self) -> Iterator[Metric]:
        tally, readings = self._tally, self._readings
        connections = GaugeMetricFamily(
            "buildcast_connections", "Open SSE streams and WebSockets.", labels=["transport"]
        )
        connections.add_metric(["sse"], tally.sse)
        connections.add_metric(["ws"], tally.ws)
        yield connections
        deliveries = CounterMetricFamily(
            "buildcast_deliveries",
            "Messages offered to this replica's subscribers, by transport.",
            labels=["transport"],
        )
        deliveries.add_metric(["sse"], tally.delivered_sse)
        deliveries.add_metric(["ws"], tally.delivered_ws)
        yield deliveries
        yield CounterMetricFamily(
            "buildcast_slow_consumers",
            "Clients cut off for falling behind (a full queue, or a write stalled).",
            value=tally.slow_consumers,
        )
        yield GaugeMetricFamily(
            "buildcast_watched_builds", "Builds this replica watches.", value=readings.watched()
        )
        yield GaugeMetricFamily(
            "buildcast_pollers",
            "Builds this replica polls (it holds their lease).",
            value=readings.pollers(),
        )
        yield GaugeMetricFamily(
            "buildcast_view_age_seconds",
            "Seconds since the upstream last answered for the stalest build this replica polls.",
            value=readings.view_age(),
        )
        yield GaugeMetricFamily(
            "buildcast_bus_up",
            "1 while the bus (Redis) takes publishes.",
            value=1.0 if readings.bus_up() else 0.0,
        )
