"""The lattice's topics, derived from lattice.toml, and their idempotent creation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import NewTopic
from aiokafka.errors import for_code

from streamlattice.config import Lattice
from streamlattice.errors import NotAuthorized, StreamLatticeError, TopicMissing
from streamlattice.kafka.clients import KafkaSettings, make_admin, start_client

TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True)
class TopicSpec:
    """A topic the lattice needs: its name, partitions and configs."""

    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    # The region each partition belongs to: on a cluster whose brokers carry those regions as
    # `broker.rack`, its leader is placed at home (see `home_replicas`).
    homes: tuple[str, ...] = ()


def lattice_topics(lattice: Lattice) -> list[TopicSpec]:
    """Every topic of the layout, tasks first."""
    n = lattice.total_partitions
    homes = tuple(lattice.region_of_partition(p).name for p in range(n))
    specs: list[TopicSpec] = []
    for task in lattice.tasks:
        specs += [
            TopicSpec(lattice.events_topic(task), n, homes=homes),
            TopicSpec(lattice.results_topic(task), n, homes=homes),
            # Same layout as the events, so a dead letter stays in its region's block.
            TopicSpec(lattice.dlq_topic(task), n, homes=homes),
        ]
    compacted = {"cleanup.policy": "compact"}
    specs += [
        TopicSpec(lattice.heartbeats_topic, 3, compacted),
        TopicSpec(lattice.placement_topic, 1, compacted),
    ]
    return specs


@dataclass(frozen=True)
class TopicReport:
    """What `topics init` did with one topic."""

    name: str
    partitions: int
    action: str  # "created" or "found"


def home_replicas(
    homes: Sequence[str], racks: Mapping[int, str | None], replication: int, distance: Callable[[str, str], float]
) -> dict[int, list[int]] | None:
    """Replica lists that lead each partition from a broker in its home region (rack), with the
    followers in the other regions first, nearest first, so that losing a region loses no
    partition; None when some home region has no broker (Kafka's own placement then).

    A region's partitions are spread over its brokers; followers rotate among equally near ones.
    """
    by_rack: dict[str, list[int]] = {}
    for broker, rack in sorted(racks.items()):
        if rack:
            by_rack.setdefault(rack, []).append(broker)
    if not homes or any(h not in by_rack for h in homes):
        return None
    brokers = sorted(racks)
    replication = min(replication, len(brokers))
    assignment: dict[int, list[int]] = {}
    for p, home in enumerate(homes):
        local = by_rack[home]
        leader = local[p % len(local)]
        rest = [b for b in brokers if b != leader]
        rest = rest[p % len(rest) :] + rest[: p % len(rest)] if rest else []
        rest.sort(key=lambda b: (racks[b] == home, distance(home, racks[b] or "")))
        assignment[p] = [leader, *rest[: replication - 1]]
    return assignment


async def ensure_topics(settings: KafkaSettings, lattice: Lattice) -> list[TopicReport]:
    """Create the layout's missing topics and check the existing ones; safe to run again.

    On a cluster whose brokers' racks are the lattice's regions, each region's partitions are led
    from its own brokers."""
    return await create_topics(settings, lattice_topics(lattice), lambda a, b: lattice.latency_ms.get((a, b), 0.0))


async def create_topics(
    settings: KafkaSettings,
    specs: list[TopicSpec],
    distance: Callable[[str, str], float] = lambda a, b: 0.0,
    replication: int | None = None,
) -> list[TopicReport]:
    """Create the missing ones of `specs`, check the existing ones, and return once brokers serve them.

    Replicas: `replication`, else 3 or as many as there are brokers. A spec with `homes` on a
    cluster with those racks gets its leaders at home (`home_replicas`, followers ordered by
    `distance` between regions)."""
    admin = make_admin(settings)
    await start_client(admin, settings)
    try:
        cluster = await admin.describe_cluster()
        replication = min(replication or 3, len(cluster["brokers"]))
        racks = {b["node_id"]: b.get("rack") for b in cluster["brokers"]}
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        missing = [s for s in specs if s.name not in existing]
        if missing:
            new = []
            for s in missing:
                placed = home_replicas(s.homes, racks, replication, distance)
                new.append(
                    NewTopic(s.name, -1, -1, replica_assignments=placed, topic_configs=s.configs)
                    if placed
                    else NewTopic(s.name, s.partitions, replication, topic_configs=s.configs)
                )
            resp = await admin.create_topics(new)
            for name, code, *rest in resp.topic_errors:
                if code not in (0, TOPIC_ALREADY_EXISTS):
                    detail = rest[0] if rest and rest[0] else for_code(code).__name__
                    raise StreamLatticeError(f"could not create topic {name}: {detail}")
            await _wait_until_served(admin, [s.name for s in missing])
        reports: list[TopicReport] = []
        for s in specs:
            have = existing.get(s.name)
            if have is not None and have < s.partitions:
                raise StreamLatticeError(
                    f"topic {s.name} has {have} partitions but lattice.toml needs {s.partitions}; "
                    "partitions cannot shrink or be reassigned to regions in place: use a new namespace"
                )
            reports.append(TopicReport(s.name, have or s.partitions, "found" if have else "created"))
        return reports
    finally:
        await admin.close()


async def _wait_until_served(admin: Any, names: list[str], timeout_s: float = 30.0) -> None:
    # CreateTopics returns once the controller has the topics; brokers learn of them a moment
    # later. Return only when metadata shows every partition with a leader, so whoever uses
    # the topics next finds them.
    deadline = time.monotonic() + timeout_s
    while True:
        topics = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in topics
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        if ready >= set(names):
            return
        if time.monotonic() > deadline:
            raise StreamLatticeError(
                f"topics {sorted(set(names) - ready)} created but not served after {timeout_s:.0f}s"
            )
        await asyncio.sleep(0.1)


TOPIC_AUTHORIZATION_FAILED = 29  # Kafka's error code


# How long a topic a broker calls unknown is asked about again (see require_topics).
METADATA_SETTLE_S = 3.0


async def require_topics(settings: KafkaSettings, names: list[str]) -> dict[str, int]:
    """Partition counts of `names`; TopicMissing naming the command that creates them.

    A broker that has just started (or not yet applied the newest metadata) may not know a topic
    for a moment: a topic it calls unknown is asked about again for up to `METADATA_SETTLE_S`.
    """
    deadline = time.monotonic() + METADATA_SETTLE_S
    while True:
        admin = make_admin(settings)
        await start_client(admin, settings)
        try:
            described = await admin.describe_topics(names)
        finally:
            await admin.close()
        found = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
        refused = [t["topic"] for t in described if t["error_code"] == TOPIC_AUTHORIZATION_FAILED]
        if refused:
            raise NotAuthorized(
                f"{settings.security.describe()} may not use topic(s) {', '.join(refused)} on {settings.bootstrap}: "
                "use the credentials of a principal with rights to them"
            )
        missing = [n for n in names if n not in found]
        if not missing:
            return found
        if time.monotonic() >= deadline:
            raise TopicMissing(
                f"topic(s) {', '.join(missing)} missing on {settings.bootstrap} (run `streamlattice topics init`)"
            )
        await asyncio.sleep(0.5)
