"""The routing stream: a faust-streaming app that turns heartbeats into placement plans.

It keeps a table of node heartbeats (changelog-backed, so a restarted router knows the
lattice at once), measures each partition's arrival rate from end offsets and its lag from
the worker group's committed offsets, reconsiders the plan every `plan_interval_s`, and
publishes changed plans (and, every `plan_refresh_s`, the current one again) to the
compacted placement topic, keyed by task. Its epochs survive restarts: it reads its own
last plans back from that topic when it starts. Its view is served as JSON over HTTP:
`/` (everything), `/plan`, `/nodes`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import faust
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streamlattice import paths
from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, broker_count, make_admin, make_consumer
from streamlattice.kafka.compacted import CompactedReader
from streamlattice.kafka.groups import describe_group
from streamlattice.kafka.hanging import CONSUMER_OFFSETS, heal, offsets_partition
from streamlattice.kafka.lag import group_offsets
from streamlattice.kafka.topics import TopicSpec, create_topics
from streamlattice.metrics import RouterMetrics
from streamlattice.metrics import serve as serve_metrics
from streamlattice.router.decisions import OffsetRates, TaskRouting, live_nodes, recommendations
from streamlattice.wire.clock import now_us
from streamlattice.wire.records import Heartbeat, PublishedPlan, decode_heartbeats
from streamlattice.worker.transactions import TRANSACTION_TIMEOUT_MS

log = logging.getLogger(__name__)


class RouterView:
    """What the router knows, kept beside the faust app."""

    def __init__(self, lattice: Lattice) -> None:
        self.lattice = lattice
        self.tasks = {t: TaskRouting(t) for t in lattice.tasks}
        self.rates = {t: OffsetRates() for t in lattice.tasks}
        self.lag: dict[str, dict[int, int]] = {t: {} for t in lattice.tasks}
        self.plans_published = 0

    def as_json(self, heartbeats: list[Heartbeat]) -> dict[str, Any]:
        """The operator's view: nodes, and per task the plan with the reason for every partition."""
        now = now_us()
        timeout = self.lattice.settings.node_timeout_s
        nodes = [
            {
                **{k: v for k, v in hb.as_json().items() if k != "partition_load_eps"},
                "age_s": round(hb.age_s(now), 1),
                "live": not hb.stopping and hb.age_s(now) <= timeout,
            }
            for hb in sorted(heartbeats, key=lambda h: (h.task, h.node_id))
        ]
        tasks = {}
        for name, routing in self.tasks.items():
            plan = routing.last
            tasks[name] = {
                "epoch": routing.epoch,
                "age_s": round(plan.age_s(now), 1) if plan else None,
                "moves": plan.moves if plan else 0,
                "recommendations": [r.__dict__ for r in plan.recommendations] if plan else [],
                "partitions": [
                    {
                        **p.__dict__,
                        "load_eps": round(self.rates[name].rates.get(p.partition, 0.0), 2),
                        "lag": self.lag[name].get(p.partition),
                    }
                    for p in (plan.placements if plan else ())
                ],
            }
        return {
            "namespace": self.lattice.namespace,
            "nodes": nodes,
            "tasks": tasks,
            "plans_published": self.plans_published,
        }


# How often the router looks for hanging transactions, and how long a transaction must have
# written nothing to count as one: four times the workers' transaction timeout, after which a
# coordinator that knows the transaction has aborted it (worker.transactions).
HEAL_EVERY_S = 30.0
HANGING_AFTER_S = 4 * TRANSACTION_TIMEOUT_MS / 1000


def make_app(
    lattice: Lattice,
    settings: KafkaSettings,
    web_port: int = 6066,
    web_host: str = "127.0.0.1",
    replication: int = 1,
    metrics: RouterMetrics | None = None,
) -> faust.App:
    """The router's faust app for `lattice`."""
    brokers = ";".join(f"kafka://{b}" for b in settings.bootstrap.split(","))
    datadir = paths.data_dir() / "router"  # faust's own default is the working directory
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id(lattice),
        broker=brokers,
        store="memory://",  # rebuilt from the table's changelog topic on start
        datadir=datadir / app_id(lattice),
        web_port=web_port,
        web_host=web_host,
        web_bind=web_host,
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=3,
        topic_replication_factor=replication,  # of the router's own changelog and assignor topics
        producer_acks=-1,
        broker_client_id=f"{lattice.namespace}-router",
        broker_credentials=faust_credentials(settings),
    )
    heartbeats_topic = app.topic(lattice.heartbeats_topic, key_type=bytes, value_type=bytes, partitions=3)
    placement_topic = app.topic(lattice.placement_topic, key_type=bytes, value_type=bytes, partitions=1)
    nodes = app.Table("nodes", default=None, partitions=3, key_type=bytes, value_type=bytes)
    view = RouterView(lattice)
    metrics = metrics or RouterMetrics()
    clients: dict[str, Any] = {}

    def heartbeats() -> list[Heartbeat]:
        return decode_heartbeats(list(nodes.values()))

    @app.agent(heartbeats_topic)
    async def track(stream: Any) -> Any:
        async for key, value in stream.items():
            if key and value:
                nodes[key] = value

    @app.task
    async def recover_plans() -> None:
        """Take up the epochs of the plans this router (or its predecessor) published."""
        reader = CompactedReader(
            settings.with_client_id(f"{lattice.namespace}-router-recover"), lattice.placement_topic
        )
        await reader.start()
        try:
            # no deadline: planning before the epochs are known would publish stale epochs
            newest = await reader.read_to_end(timeout_s=float("inf"))
        finally:
            await reader.stop()
        for key, value in newest.items():
            if key.decode() in view.tasks:
                view.tasks[key.decode()].recover(PublishedPlan.decode(value))
        clients["recovered"] = True
        log.info("router: recovered epochs %s", {t: r.epoch for t, r in view.tasks.items()})

    async def start_clients() -> None:
        if "admin" not in clients:  # started whole, outside the rounds' time bound
            offsets = make_consumer(settings.with_client_id(f"{lattice.namespace}-router-offsets"))
            await offsets.start()
            admin = make_admin(settings.with_client_id(f"{lattice.namespace}-router-admin"))
            await admin.start()
            clients["offsets"], clients["admin"] = offsets, admin

    async def measure(task: str) -> None:
        tps = [TopicPartition(lattice.events_topic(task), p) for p in range(lattice.total_partitions)]
        # a round does not wait for a coordinator that is not ready: the next round asks again
        offsets = await group_offsets(clients["admin"], clients["offsets"], lattice.group_id(task), tps, wait_s=1.0)
        view.rates[task].observe({tp.partition: o.end for tp, o in offsets.items()})
        view.lag[task] = {tp.partition: o.lag for tp, o in offsets.items() if o.committed is not None}

    # per task: (monotonic time, node ids the worker group counted then)
    members: dict[str, tuple[float, frozenset[str]]] = {}

    @app.timer(interval=lattice.settings.plan_interval_s)
    async def replan() -> None:
        if not clients.get("recovered"):
            return
        now = now_us()
        known = heartbeats()
        # A broker gone silent (a network partition) holds a request for the whole request
        # timeout: a round asks for at most this long, and plans with what it knows.
        ask_s = max(2.0, lattice.settings.plan_interval_s)
        try:
            await start_clients()
        except KafkaError as e:  # plan with the heartbeats alone, and try again next round
            log.warning("router: cannot ask the cluster for offsets and members (%s)", e)
        for task, routing in view.tasks.items():
            try:
                if "admin" in clients:
                    await asyncio.wait_for(measure(task), ask_s)
            except (KafkaError, TimeoutError) as e:
                log.warning("router: offsets of %s unavailable (%s)", task, str(e) or f"no answer in {ask_s:g}s")
            try:  # who the group's coordinator still counts (see live_nodes)
                if "admin" in clients:
                    group = await asyncio.wait_for(
                        describe_group(settings, lattice.group_id(task), clients["admin"], wait_s=0), ask_s
                    )
                    if group.state == "Stable":  # mid-rebalance it lists only the members back so far
                        members[task] = (time.monotonic(), frozenset(m.node_id for m in group.members if m.node_id))
            except (KafkaError, TimeoutError) as e:
                log.warning("router: members of %s unavailable (%s)", task, str(e) or f"no answer in {ask_s:g}s")
            # no answer: the last one, while it is recent (a broker failover), never for good
            seen_at, counted = members.get(task, (-math.inf, frozenset()))
            fresh = time.monotonic() - seen_at <= 3 * lattice.settings.node_timeout_s
            live = live_nodes(known, task, now, lattice.settings.node_timeout_s, counted if fresh else None)
            plan = routing.decide(
                lattice, live, view.rates[task].rates, lattice.settings.plan_refresh_s, lag=view.lag[task]
            )
            metrics.live_nodes.labels(task).set(len(live))
            for region in lattice.regions:
                metrics.region_live_nodes.labels(task, region.name).set(sum(n.region == region.name for n in live))
            metrics.partition_load.labels(task).set(sum(view.rates[task].rates.values()))
            # every round, not only with a published plan: KEDA's trigger needs a fresh value even
            # while the task has no live node (then measured at the default capacity)
            metrics.recommend(task, recommendations(lattice, live, view.rates[task].rates, view.lag[task]))
            if plan is not None:
                await placement_topic.send(key=task.encode(), value=plan.encode())
                view.plans_published += 1
                metrics.plans.labels(task).inc()
                metrics.moves.labels(task).inc(plan.moves)
                metrics.epoch.labels(task).set(plan.epoch)
                if plan.moves or plan.epoch == 1:
                    log.info(
                        "router: %s plan epoch %d, %d moves, %d live nodes (%s)",
                        task,
                        plan.epoch,
                        plan.moves,
                        len(live),
                        routing.why,
                    )

    lattice_partitions = [
        TopicPartition(topic, p)
        for task in lattice.tasks
        for topic in (lattice.events_topic(task), lattice.results_topic(task), lattice.dlq_topic(task))
        for p in range(lattice.total_partitions)
    ]

    @app.timer(interval=HEAL_EVERY_S)
    async def abort_hanging() -> None:
        """Abort the transactions that no coordinator completes on the lattice's topics and on its
        groups' offsets partitions (kafka.hanging)."""
        if "admin" not in clients:
            return
        client = clients["admin"]._client
        try:
            offsets = len(await client._wait_on_metadata(CONSUMER_OFFSETS))
            groups = [
                TopicPartition(CONSUMER_OFFSETS, offsets_partition(lattice.group_id(t), offsets)) for t in lattice.tasks
            ]
            aborted = await heal(client, lattice_partitions + sorted(set(groups)), HANGING_AFTER_S, now_us() // 1000)
        except KafkaError as e:  # the next round asks again
            log.info("router: hanging transactions not checked (%s)", e)
            return
        for t in aborted:
            metrics.hanging_aborted.labels(t.tp.topic).inc()

    @app.page("/")
    async def everything(web: Any, request: Any) -> Any:
        return web.json(view.as_json(heartbeats()))

    @app.page("/plan")
    async def plan_view(web: Any, request: Any) -> Any:
        return web.json(view.as_json(heartbeats())["tasks"])

    @app.page("/nodes")
    async def nodes_view(web: Any, request: Any) -> Any:
        return web.json(view.as_json(heartbeats())["nodes"])

    return app


def faust_credentials(settings: KafkaSettings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The router's TLS and SASL settings, as faust takes them."""
    sec = settings.security
    if sec.uses_sasl:
        return faust.SASLCredentials(
            username=sec.username, password=sec.password, ssl_context=sec.ssl_context(), mechanism=sec.mechanism
        )
    context = sec.ssl_context()
    return faust.SSLCredentials(context) if context is not None else None


def app_id(lattice: Lattice) -> str:
    """The router's faust app id (its consumer group, and the prefix of its own topics)."""
    return f"{lattice.namespace}.router"


def router_topics(lattice: Lattice) -> list[TopicSpec]:
    """The router's own topics: its table's changelog (partitioned like the heartbeats) and faust's
    leader-election topic."""
    return [
        TopicSpec(f"{app_id(lattice)}-nodes-changelog", 3, {"cleanup.policy": "compact"}),
        TopicSpec(f"{app_id(lattice)}-__assignor-__leader", 1),
    ]


def run_router(
    lattice: Lattice,
    settings: KafkaSettings,
    web_port: int,
    web_host: str,
    loglevel: str,
    metrics_port: int | None = None,
) -> None:
    """Run the router until SIGTERM or Ctrl-C."""
    replication = min(3, asyncio.run(broker_count(settings)))
    # faust would create its own topics as it starts, racing a young broker's metadata (and
    # then finding the table's changelog with 0 partitions); make them first.
    asyncio.run(create_topics(settings, router_topics(lattice)))
    metrics = RouterMetrics()
    if metrics_port:
        serve_metrics(metrics.registry, metrics_port)
    app = make_app(lattice, settings, web_port, web_host, replication, metrics)
    worker = faust.Worker(app, loglevel=loglevel.lower(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
