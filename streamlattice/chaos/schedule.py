"""Fault schedules drawn from a seed: pure, no I/O, the same schedule for the same seed everywhere.

A schedule is data (JSON), so a run that found something can be replayed exactly
(`streamlattice chaos --replay FILE`). Targets are drawn as numbers and resolved against what
runs when the fault fires (a worker slot, the broker leading most partitions).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# What the nemesis can do, and how long each keeps its target down (seconds, drawn uniformly).
DOWN_S: dict[str, tuple[float, float]] = {
    "worker_kill": (1.0, 8.0),  # SIGKILL a worker, start it again after down_s
    "worker_pause": (13.0, 20.0),  # SIGSTOP past the 10 s session timeout, then SIGCONT: a zombie
    "router_kill": (5.0, 45.0),  # SIGKILL the router, start it again after down_s
    "leader_kill_in_rebalance": (2.0, 8.0),  # a worker joins; SIGKILL the leader while it assigns
    "broker_leader_kill": (5.0, 20.0),  # SIGKILL the broker leading most event partitions
    "broker_rolling_restart": (2.0, 5.0),  # SIGTERM and restart each broker in turn, down_s apart
    "region_cut": (15.0, 45.0),  # blackhole every link of one region's data centre, then heal them
}
KINDS = tuple(DOWN_S)
REGION_KINDS = ("region_cut",)  # faults that need emulated regions (chaos --regions-emulated)
PLAIN_KINDS = tuple(k for k in KINDS if k not in REGION_KINDS)  # what a plain three-broker cluster can take
MODES = ("alo", "eos")


@dataclass(frozen=True)
class Fault:
    """One fault: when (seconds after the load starts), what, which target, for how long."""

    at_s: float
    kind: str
    target: int
    down_s: float


@dataclass(frozen=True)
class Schedule:
    """A run: its seed, length, delivery mode, load and faults."""

    seed: int
    minutes: float
    mode: str
    rate: float  # events/s published, open loop, over all regions and tasks
    faults: tuple[Fault, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """The schedule as JSON-able data."""
        return {**asdict(self), "faults": [asdict(f) for f in self.faults]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Schedule:
        """A schedule from `to_json`'s data, or from a report that holds one under "schedule"."""
        data = data.get("schedule", data)
        faults = tuple(Fault(**f) for f in data["faults"])
        for f in faults:
            if f.kind not in DOWN_S:
                raise ValueError(f"unknown fault kind {f.kind!r} (known: {', '.join(KINDS)})")
        if data["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {data['mode']!r}")
        return cls(int(data["seed"]), float(data["minutes"]), data["mode"], float(data["rate"]), faults)

    def dumps(self) -> str:
        """The schedule as JSON text."""
        return json.dumps(self.to_json(), indent=2)


def draw(
    seed: int,
    minutes: float,
    mode: str = "alo",
    rate: float = 100.0,
    every_s: float = 60.0,
    kinds: Sequence[str] = PLAIN_KINDS,
    warm_up_s: float = 15.0,
    quiet_s: float = 15.0,
) -> Schedule:
    """A schedule of `minutes` with a fault about every `every_s` seconds (±30%), drawn from `seed`.

    No fault starts in the first `warm_up_s` or within `quiet_s` of the end, and each starts
    at least `quiet_s` after the previous one ended, so every fault's recovery can be seen.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    unknown = set(kinds) - set(DOWN_S)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)} (known: {', '.join(KINDS)})")
    rng = random.Random(seed)
    end = minutes * 60 - quiet_s
    faults: list[Fault] = []
    t = warm_up_s + rng.uniform(0, every_s * 0.3)
    while True:
        kind = rng.choice(list(kinds))
        low, high = DOWN_S[kind]
        down = round(rng.uniform(low, high), 1)
        at = round(t, 1)
        if at + down > end:
            break
        faults.append(Fault(at, kind, rng.randrange(1 << 16), down))
        t = max(at + every_s * rng.uniform(0.7, 1.3), at + down + quiet_s)
    return Schedule(seed, minutes, mode, rate, tuple(faults))


def check_lab(schedule: Schedule, tasks: Sequence[str], regions_emulated: bool) -> None:
    """Refuse, before anything starts, a schedule the lab cannot run: a region cut needs emulated
    regions, and a run on emulated regions serves one task. ValueError says what to change."""
    needs = sorted({f.kind for f in schedule.faults} & set(REGION_KINDS))
    if needs and not regions_emulated:
        raise ValueError(f"{', '.join(needs)} needs emulated regions: add --regions-emulated")
    if regions_emulated and len(tasks) != 1:
        raise ValueError(f"a run on emulated regions runs one task, not {len(tasks)} ({', '.join(tasks)})")
