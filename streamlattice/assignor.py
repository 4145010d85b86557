"""Region-local partition assignment for a worker group: a region's partitions go to its own nodes.

The policy is the pure function `assign_region_local`; `region_assignor` binds a worker's own
facts (node id, region) into an aiokafka assignor class, since aiokafka's assignors are
classmethod-based and a member's metadata must come from the class. Membership, generations
and fencing stay Kafka's own. The lattice issue layers the router's placement plan on top.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

from streamlattice.config import Lattice


@dataclass(frozen=True)
class Member:
    """What a worker tells the group leader about itself."""

    node_id: str
    region: str

    def encode(self) -> bytes:
        """The member's user_data bytes."""
        return json.dumps({"node_id": self.node_id, "region": self.region}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Member | None:
        """A member of user_data bytes, or None if another kind of client wrote them."""
        try:
            raw = json.loads(data)
            return cls(str(raw["node_id"]), str(raw["region"]))
        except (ValueError, KeyError, TypeError):
            return None


def assign_region_local(
    partitions: Iterable[int], region_of: Mapping[int, str], members: Mapping[str, str | None]
) -> dict[str, list[int]]:
    """Partition numbers per member id: each region's block round-robin over that region's members.

    A region with no member of its own is served by every member, least loaded first, so
    every partition is assigned exactly once while any member lives. Deterministic.
    """
    ids = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in ids}
    if not ids:
        return out
    by_region: dict[str | None, list[str]] = defaultdict(list)
    for m in ids:
        by_region[members[m]].append(m)
    orphans: list[int] = []
    next_index: dict[str, int] = defaultdict(int)
    for p in sorted(partitions):
        region = region_of.get(p)
        local = by_region.get(region) if region is not None else None
        if not local:
            orphans.append(p)
            continue
        i = next_index[region]  # type: ignore[index]
        out[local[i % len(local)]].append(p)
        next_index[region] += 1  # type: ignore[index]
    for p in orphans:
        target = min(ids, key=lambda m: (len(out[m]), m))
        out[target].append(p)
    return out


def region_assignor(lattice: Lattice, me: Member) -> type[AbstractPartitionAssignor]:
    """An aiokafka assignor class carrying this worker's member facts and the lattice's regions."""
    region_of = {p: r.name for r in lattice.regions for p in r.block}

    class RegionLocalAssignor(AbstractPartitionAssignor):
        name = "streamlattice-region"
        version = 0

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, sorted(topics), me.encode())

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            pass

        @classmethod
        def assign(
            cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            topics = sorted({t for m in members.values() for t in m.subscription})
            plan: dict[str, list[tuple[str, list[int]]]] = {m: [] for m in members}
            for topic in topics:
                subscribed = {
                    mid: (info.region if (info := Member.decode(meta.user_data)) else None)
                    for mid, meta in members.items()
                    if topic in meta.subscription
                }
                parts = cluster.partitions_for_topic(topic) or set()
                for mid, ps in assign_region_local(parts, region_of, subscribed).items():
                    if ps:
                        plan[mid].append((topic, ps))
            return {m: ConsumerProtocolMemberAssignment(cls.version, a, b"") for m, a in plan.items()}

    return RegionLocalAssignor
