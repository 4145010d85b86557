"""A node's power model and the energy this process uses, for the estimates each result carries.

The method is the operational part of the Green Software Foundation's Software Carbon
Intensity (SCI, ISO/IEC 21031:2024), SCI = (E * I + M) per R, with R one inference:

- E, energy: each of the CPUs a worker is given draws `idle_watts` doing nothing and
  `busy_watts` fully used, linearly in between (the model of Cloud Carbon Footprint, whose
  averages for AWS, 0.74 W and 3.5 W per vCPU, are the defaults). Over `wall` seconds in which
  the process used `cpu` CPU-seconds (user and system time of all its threads, as the OS
  counts them: decoding, Kafka I/O, the event loop and inference alike),
  E = cpus * wall * idle_watts + cpu * (busy_watts - idle_watts).
  The worker's `cpus` is its share of the node: the idle draw of CPUs it is given is its own
  whether it serves or not.
- I, intensity: the node's grid carbon intensity (gCO2/kWh) from its power source, read at
  each heartbeat. This is an average intensity; a marginal one would need a marginal feed.
- M, embodied emissions: not counted (0): the hardware's share is not known here.
- R: each batch of results carries the energy used since the previous batch answered, shared
  equally among its events, so time spent idle between batches and batches that only
  dead-lettered are paid for by the next results.

No library measures this better on these machines: with no RAPL counters (no
/sys/class/powercap) codecarbon falls back to a TDP-times-CPU-load estimate of the same kind,
with its own intensity data and a pandas dependency, and would not see the node's power source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

METHOD = (
    "SCI (ISO/IEC 21031:2024) operational part: E = cpus x wall_s x idle_W + process_cpu_s x (busy_W - idle_W), "
    "whole-process CPU time from the OS; C = E x the node's average grid gCO2/kWh; embodied M = 0; "
    "per result: the energy since the previous results batch, shared by its events"
)


@dataclass(frozen=True)
class PowerModel:
    """What one CPU of a node draws idle and fully busy, and how many CPUs a worker is given."""

    idle_watts: float = 0.74  # per CPU, doing nothing (Cloud Carbon Footprint's AWS average)
    busy_watts: float = 3.5  # per CPU, fully used
    cpus: float = 1.0  # the worker's share of the node

    def __post_init__(self) -> None:
        if self.idle_watts < 0 or self.busy_watts < self.idle_watts or self.cpus <= 0:
            raise ValueError(
                f"a power model needs 0 <= idle_watts <= busy_watts and cpus > 0, got idle_watts="
                f"{self.idle_watts}, busy_watts={self.busy_watts}, cpus={self.cpus}"
            )

    def joules(self, cpu_s: float, wall_s: float) -> float:
        """Energy of a worker that used `cpu_s` CPU-seconds over `wall_s` seconds."""
        return self.cpus * max(wall_s, 0.0) * self.idle_watts + max(cpu_s, 0.0) * (self.busy_watts - self.idle_watts)


def grams(joules: float, intensity_g_per_kwh: float) -> float:
    """The carbon of `joules` drawn at `intensity_g_per_kwh`."""
    return joules / 3.6e6 * intensity_g_per_kwh


class EnergyMeter:
    """The energy this process used between readings, through a power model.

    `cpu_clock` and `wall_clock` default to the OS's whole-process CPU time and a monotonic
    clock; tests pass their own.
    """

    def __init__(
        self,
        model: PowerModel,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._cpu = cpu_clock()
        self._wall = wall_clock()

    def restart(self) -> None:
        """Count from now (e.g. once the model is loaded and the node starts serving)."""
        self._cpu = self._cpu_clock()
        self._wall = self._wall_clock()

    def take(self) -> float:
        """Joules used since the last reading (or restart)."""
        cpu, wall = self._cpu_clock(), self._wall_clock()
        joules = self.model.joules(cpu - self._cpu, wall - self._wall)
        self._cpu, self._wall = cpu, wall
        return joules
