"""The group leader's decision, without Kafka: which member gets which partitions.

By the router's plan when there is one (`assign_by_plan`), else region-local and sticky
(`assign_sticky_region_local`); the members describe themselves with `Member`, and each
assignment says how it was made with `AssignmentInfo`. `streamlattice.router.assignor`
is the aiokafka assignor class around these.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    """What a worker tells the group leader about itself."""

    node_id: str
    region: str
    capacity_eps: float = 0.0
    owned: tuple[int, ...] = field(default=())  # partitions it holds now, for stickiness

    def encode(self) -> bytes:
        """The member's user_data bytes."""
        return json.dumps(
            {
                "node_id": self.node_id,
                "region": self.region,
                "capacity_eps": self.capacity_eps,
                "owned": list(self.owned),
            }
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> Member | None:
        """A member of user_data bytes, or None if another kind of client wrote them."""
        try:
            raw = json.loads(data)
            return cls(
                str(raw["node_id"]),
                str(raw["region"]),
                float(raw.get("capacity_eps", 0.0)),
                tuple(int(p) for p in raw.get("owned", ())),
            )
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class AssignmentInfo:
    """What the leader tells each member about how its assignment was made."""

    epoch: int  # plan epoch used, 0 for none
    mode: str  # "plan" or "sticky"

    def encode(self) -> bytes:
        """The assignment's user_data bytes."""
        return json.dumps({"epoch": self.epoch, "mode": self.mode}).encode()

    @classmethod
    def decode(cls, data: bytes) -> AssignmentInfo:
        """The info of user_data bytes (epoch 0, sticky, if absent or foreign)."""
        try:
            raw = json.loads(data)
            return cls(int(raw["epoch"]), str(raw["mode"]))
        except (ValueError, KeyError, TypeError):
            return cls(0, "sticky")


def _least_loaded(candidates: Iterable[str], out: Mapping[str, list[int]]) -> str:
    return min(candidates, key=lambda m: (len(out[m]), m))


def assign_sticky_region_local(
    partitions: Iterable[int], region_of: Mapping[int, str], members: Mapping[str, Member | None]
) -> dict[str, list[int]]:
    """Partitions per member id: each region's block over that region's members, keeping what they own.

    A member keeps the partitions it owns (of its region, up to a fair share of the block);
    the rest go to the least loaded member of the partition's region, or of the whole group
    when the region has no member. Every partition is assigned exactly once while any member
    lives. Deterministic.
    """
    ids = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in ids}
    if not ids:
        return out
    by_region: dict[str | None, list[str]] = defaultdict(list)
    for m in ids:
        info = members[m]
        by_region[info.region if info else None].append(m)
    parts = sorted(set(partitions))
    block_size: dict[str, int] = defaultdict(int)
    for p in parts:
        block_size[region_of.get(p, "")] += 1
    taken: set[int] = set()
    for m in ids:  # stickiness first, in member order, never beyond a fair share
        info = members[m]
        if info is None:
            continue
        local = by_region[info.region]
        share = math.ceil(block_size[info.region] / len(local)) if local else 0
        for p in sorted(info.owned):
            if p in parts and p not in taken and region_of.get(p) == info.region and len(out[m]) < share:
                out[m].append(p)
                taken.add(p)
    for p in parts:
        if p in taken:
            continue
        local = by_region.get(region_of.get(p)) or ids
        out[_least_loaded(local, out)].append(p)
    return {m: sorted(ps) for m, ps in out.items()}


def assign_by_plan(
    partitions: Iterable[int],
    plan: Mapping[int, str],
    region_of: Mapping[int, str],
    members: Mapping[str, Member | None],
) -> dict[str, list[int]]:
    """Partitions per member id as the plan says; a partition whose planned node is not in the
    group goes to the least loaded member of its region, else of the group."""
    ids = sorted(members)
    out: dict[str, list[int]] = {m: [] for m in ids}
    if not ids:
        return out
    by_node: dict[str, str] = {}
    for m in ids:
        info = members[m]
        if info is not None and info.node_id not in by_node:
            by_node[info.node_id] = m
    by_region: dict[str, list[str]] = defaultdict(list)
    for m in ids:
        info = members[m]
        if info is not None:
            by_region[info.region].append(m)
    missing: list[int] = []
    for p in sorted(set(partitions)):
        owner = by_node.get(plan.get(p, ""))
        if owner is None:
            missing.append(p)
        else:
            out[owner].append(p)
    for p in missing:
        out[_least_loaded(by_region.get(region_of.get(p, "")) or ids, out)].append(p)
    return out
