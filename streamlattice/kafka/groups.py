"""What a worker group looks like from the broker: its state and each member's node and partitions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import KafkaError

from streamlattice.errors import StreamLatticeError
from streamlattice.kafka.clients import KafkaSettings, make_admin, start_client
from streamlattice.kafka.fixes import COORDINATOR_WAIT_S, ask_coordinator
from streamlattice.placement.assignment import Member


@dataclass(frozen=True)
class GroupMember:
    """One member as the group coordinator reports it."""

    member_id: str
    client_id: str
    node_id: str | None
    region: str | None
    partitions: tuple[int, ...]


@dataclass(frozen=True)
class GroupView:
    """A consumer group's state ("Stable", "PreparingRebalance", "Empty", ...) and members."""

    group_id: str
    state: str
    members: tuple[GroupMember, ...]


async def describe_group(
    settings: KafkaSettings, group_id: str, admin: Any = None, wait_s: float = COORDINATOR_WAIT_S
) -> GroupView:
    """The group as its coordinator sees it now (through `admin`, a started admin client, if given),
    waiting up to `wait_s` for a coordinator that is not ready."""
    if admin is not None:
        (response,) = await ask_coordinator(lambda: admin.describe_consumer_groups([group_id]), wait_s)
    else:
        admin = make_admin(settings)
        await start_client(admin, settings)
        try:
            (response,) = await ask_coordinator(lambda: admin.describe_consumer_groups([group_id]), wait_s)
        finally:
            await admin.close()
    group = response.to_object()["groups"][0]
    members = []
    for m in group["members"]:
        meta = ConsumerProtocolMemberMetadata.decode(m["member_metadata"]) if m["member_metadata"] else None
        me = Member.decode(meta.user_data) if meta else None
        assigned = (
            ConsumerProtocolMemberAssignment.decode(m["member_assignment"]).partitions()
            if m["member_assignment"]
            else []
        )
        members.append(
            GroupMember(
                m["member_id"],
                m["client_id"],
                me.node_id if me else None,
                me.region if me else None,
                tuple(sorted(tp.partition for tp in assigned)),
            )
        )
    return GroupView(group_id, group["state"], tuple(members))


async def wait_for_stable_group(settings: KafkaSettings, group_id: str, members: int, timeout_s: float) -> GroupView:
    """Wait until the group is Stable with `members` members that all hold their assignment."""
    deadline = time.monotonic() + timeout_s
    view = GroupView(group_id, "Unknown", ())
    while time.monotonic() < deadline:
        with contextlib.suppress(KafkaError):
            view = await describe_group(settings, group_id, wait_s=max(deadline - time.monotonic(), 0.0))
        if view.state == "Stable" and len(view.members) >= members:
            return view
        await asyncio.sleep(0.3)
    raise StreamLatticeError(
        f"group {group_id} not stable with {members} members within {timeout_s:.0f}s "
        f"(state {view.state}, {len(view.members)} members); see the workers' logs"
    )
