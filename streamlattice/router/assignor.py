"""The lattice assignor: the group leader assigns partitions by the router's newest plan.

The policy lives in streamlattice.placement.assignment (`assign_by_plan`, `assign_sticky_region_local`);
`lattice_assignor` binds a worker's own facts and its plan follower into an aiokafka
assignor class (aiokafka's assignors are classmethod-based, so a member's metadata has to
come from the class). Membership, generations and fencing stay Kafka's own. Each
assignment carries the plan epoch it was made from, so a member can tell when a newer plan
has not yet reached the group and ask for a rebalance (see `request_rebalance`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata

from streamlattice.config import Lattice
from streamlattice.placement.assignment import AssignmentInfo, Member, assign_by_plan, assign_sticky_region_local
from streamlattice.wire.records import PublishedPlan

log = logging.getLogger(__name__)


def request_rebalance(consumer: AIOKafkaConsumer) -> None:
    """Ask the group for a rebalance now (the coordinator rejoins; Kafka runs the protocol).

    aiokafka 0.14 has no public call for this; its group coordinator's `request_rejoin` is
    what a failed heartbeat uses. This is the one place that reaches for it.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or not hasattr(coordinator, "request_rejoin"):
        raise RuntimeError("this aiokafka has no coordinator.request_rejoin; pin aiokafka >=0.14,<0.15")
    coordinator.request_rejoin()


def lattice_assignor(
    lattice: Lattice,
    me: Callable[[], Member],
    current_plan: Callable[[], PublishedPlan | None],
    on_assigned: Callable[[AssignmentInfo], None],
) -> type[AbstractPartitionAssignor]:
    """An aiokafka assignor class bound to this worker's facts and its view of the newest plan."""
    region_of = {p: r.name for r in lattice.regions for p in r.block}

    class LatticeAssignor(AbstractPartitionAssignor):
        name = "streamlattice-lattice"
        version = 1

        @classmethod
        def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
            return ConsumerProtocolMemberMetadata(cls.version, sorted(topics), me().encode())

        @classmethod
        def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
            on_assigned(AssignmentInfo.decode(assignment.user_data))

        @classmethod
        def assign(
            cls, cluster: ClusterMetadata, members: Mapping[str, ConsumerProtocolMemberMetadata]
        ) -> dict[str, ConsumerProtocolMemberAssignment]:
            plan = current_plan()
            info = AssignmentInfo(plan.epoch, "plan") if plan else AssignmentInfo(0, "sticky")
            log.info("node %s leads the group: assigning %d members by %s", me().node_id, len(members), info.mode)
            topics = sorted({t for m in members.values() for t in m.subscription})
            out: dict[str, list[tuple[str, list[int]]]] = {m: [] for m in members}
            for topic in topics:
                subscribed = {
                    mid: Member.decode(meta.user_data) for mid, meta in members.items() if topic in meta.subscription
                }
                parts = cluster.partitions_for_topic(topic) or set()
                if plan is not None:
                    per_member = assign_by_plan(parts, plan.assignment, region_of, subscribed)
                else:
                    per_member = assign_sticky_region_local(parts, region_of, subscribed)
                for mid, ps in per_member.items():
                    if ps:
                        out[mid].append((topic, ps))
            return {m: ConsumerProtocolMemberAssignment(cls.version, a, info.encode()) for m, a in out.items()}

    return LatticeAssignor
