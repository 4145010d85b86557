"""Prometheus metrics of workers and the router. Labels stay bounded: task, region, node.

Each process serves its own registry on `--metrics-port` (GET /metrics).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from streamlattice.wire.records import Recommendation

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
INFER_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class WorkerMetrics:
    """What a worker exports, already bound to its task, region and node."""

    def __init__(self, task: str, region: str, node: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ("task", "region", "node")
        values = (task, region, node)
        r = self.registry

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(*values)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(*values)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=r).labels(*values)

        self.consumed = counter("streamlattice_events_consumed_total", "Events taken from Kafka")
        self.produced = counter("streamlattice_results_produced_total", "Results acknowledged by Kafka")
        self.dead_lettered = counter("streamlattice_events_dead_lettered_total", "Events sent to the DLQ")
        self.set_aside = counter(
            "streamlattice_records_set_aside_total", "Results or dead letters Kafka refused in every form (logged)"
        )
        self.outside_region = counter(
            "streamlattice_events_outside_region_total",
            "Events found in another region's partition block (served, flagged, answered in their own block)",
        )
        self.batch_size = histogram("streamlattice_batch_size", "Events per micro-batch", BATCH_BUCKETS)
        self.inference_s = histogram("streamlattice_inference_seconds", "Model time per micro-batch", INFER_BUCKETS)
        self.latency_s = histogram("streamlattice_end_to_end_seconds", "Event time to result produced", LATENCY_BUCKETS)
        self.lag = gauge("streamlattice_lag_events", "Events waiting in the node's partitions")
        self.capacity = gauge("streamlattice_capacity_eps", "Events/s the node sustains, measured")
        self.partitions = gauge("streamlattice_partitions", "Partitions the node holds")
        self.renewable = gauge("streamlattice_renewable_fraction", "Renewable share of the node's power")
        self.carbon_intensity = gauge("streamlattice_carbon_intensity_g_per_kwh", "The node's grid carbon intensity")
        self.energy_j = counter("streamlattice_energy_joules_total", "Estimated energy of inference")
        self.carbon_g = counter("streamlattice_carbon_grams_total", "Estimated CO2 of inference")


class RouterMetrics:
    """What the router exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.plans = Counter(
            "streamlattice_router_plans_total", "Plans published (changed or refreshed)", ("task",), registry=r
        )
        self.moves = Counter(
            "streamlattice_router_partition_moves_total", "Partitions moved by new plans", ("task",), registry=r
        )
        self.epoch = Gauge("streamlattice_router_plan_epoch", "Epoch of the current plan", ("task",), registry=r)
        self.live_nodes = Gauge(
            "streamlattice_router_live_nodes", "Nodes with a recent heartbeat", ("task",), registry=r
        )
        self.region_live_nodes = Gauge(
            "streamlattice_router_region_live_nodes",
            "Nodes of a task with a recent heartbeat, per region (0: the region has none)",
            ("task", "region"),
            registry=r,
        )
        self.partition_load = Gauge(
            "streamlattice_router_task_load_eps", "Arrival rate over all partitions", ("task",), registry=r
        )
        self.hanging_aborted = Counter(
            "streamlattice_router_hanging_transactions_aborted_total",
            "Transactions no coordinator completes, aborted on a lattice topic (kafka.hanging)",
            ("topic",),
            registry=r,
        )
        self.recommended_replicas = Gauge(
            "streamlattice_router_recommended_replicas",
            "Workers a region's partitions of a task need now (arrival, lag, measured capacity)",
            ("task", "region"),
            registry=r,
        )

    def recommend(self, task: str, recommendations: Iterable[Recommendation]) -> None:
        """Export the replicas recommended for each region of `task` (what autoscalers follow)."""
        for rec in recommendations:
            self.recommended_replicas.labels(task, rec.region).set(rec.replicas)


def serve(registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
    """Serve `registry` at http://host:port/metrics from a background thread."""
    start_http_server(port, addr=host, registry=registry)
