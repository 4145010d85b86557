"""Simulated power: profiles that are pure functions of time, and the clock they are read on.

Every source answers `read(t)` for a time `t` (seconds since the epoch) with the renewable
fraction of the node's electricity and its grid's carbon intensity (gCO2/kWh). The
profiles are deterministic for a seed; a `Clock` lets a day of power pass in minutes for
demos and tests. Recorded and live data come from streamlattice.power.feeds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

DIRTY_G_PER_KWH = 700.0  # coal and gas at the margin
CLEAN_G_PER_KWH = 20.0  # wind and solar, life-cycle


@dataclass(frozen=True)
class PowerReading:
    """The power a node draws now."""

    renewable_fraction: float
    carbon_intensity: float  # gCO2/kWh


def mix(renewable: float) -> PowerReading:
    """A reading for a grid whose renewable share is `renewable` and the rest fossil."""
    r = min(max(renewable, 0.0), 1.0)
    return PowerReading(r, CLEAN_G_PER_KWH * r + DIRTY_G_PER_KWH * (1 - r))


class PowerSource(Protocol):
    """Anything that can say what power is available at a time."""

    @property
    def name(self) -> str:
        """What to call the source in heartbeats and views."""
        ...

    def read(self, t: float) -> PowerReading:
        """The reading at `t`, seconds since the epoch."""
        ...


@dataclass(frozen=True)
class Clock:
    """Simulated time running `factor` times faster than the wall clock from `start`."""

    factor: float = 1.0
    start: float = 0.0  # wall-clock time the simulation started; 0: the simulation is wall time
    origin: float = 0.0  # simulated time at `start`

    @classmethod
    def accelerated(cls, factor: float, origin: float | None = None) -> Clock:
        """A clock starting now (or at simulated `origin`) running `factor` times faster."""
        now = time.time()
        return cls(factor, now, now if origin is None else origin)

    def now(self, wall: float | None = None) -> float:
        """The simulated time at wall-clock time `wall` (now by default)."""
        w = time.time() if wall is None else wall
        return self.origin + (w - self.start) * self.factor if self.start else w


def _smooth_noise(x: float, seed: int) -> float:
    """Deterministic value noise in [0, 1], smooth in x (cosine-interpolated between integers)."""

    def lattice_value(i: int) -> float:
        h = (i * 374761393 + seed * 668265263) & 0xFFFFFFFF
        h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
        return (h ^ (h >> 16)) / 0xFFFFFFFF

    i = math.floor(x)
    frac = x - i
    w = (1 - math.cos(frac * math.pi)) / 2
    return lattice_value(i) * (1 - w) + lattice_value(i + 1) * w


def local_hour(t: float, tz_hours: float) -> float:
    """Hour of the day in [0, 24) at UTC offset `tz_hours`."""
    return ((t / 3600.0) + tz_hours) % 24.0


@dataclass(frozen=True)
class Solar:
    """A grid with solar farms: renewable share follows the sun, dimmed by passing clouds."""

    tz_hours: float = 0.0
    clouds: float = 0.3  # how much clouds can dim the sun, 0..1
    peak_share: float = 0.85  # renewable share at a clear noon
    base_share: float = 0.05  # renewable share at night (hydro, ...)
    seed: int = 0
    name: str = "solar"

    def read(self, t: float) -> PowerReading:
        """The reading at `t`."""
        hour = local_hour(t, self.tz_hours)
        sun = max(0.0, math.sin(math.pi * (hour - 6.0) / 12.0))
        cloud = self.clouds * _smooth_noise(t / 1800.0, self.seed)  # weather changes over ~half-hours
        return mix(self.base_share + (self.peak_share - self.base_share) * sun * (1 - cloud))


@dataclass(frozen=True)
class Wind:
    """A grid with wind farms: renewable share drifts over hours, independent of the sun."""

    low: float = 0.15
    high: float = 0.8
    seed: int = 1
    name: str = "wind"

    def read(self, t: float) -> PowerReading:
        """The reading at `t`."""
        gust = 0.7 * _smooth_noise(t / 14400.0, self.seed) + 0.3 * _smooth_noise(t / 1800.0, self.seed + 1)
        return mix(self.low + (self.high - self.low) * gust)


@dataclass(frozen=True)
class Grid:
    """A fossil-heavy grid: carbon highest at the evening peak, lowest before dawn."""

    tz_hours: float = 0.0
    mean_share: float = 0.2
    swing: float = 0.1
    name: str = "grid"

    def read(self, t: float) -> PowerReading:
        """The reading at `t`."""
        hour = local_hour(t, self.tz_hours)
        return mix(self.mean_share - self.swing * math.cos(2 * math.pi * (hour - 19.0) / 24.0))


@dataclass(frozen=True)
class Static:
    """A constant reading."""

    renewable_fraction: float
    carbon_intensity: float
    name: str = "static"

    def read(self, t: float) -> PowerReading:
        """The same reading at any time."""
        return PowerReading(self.renewable_fraction, self.carbon_intensity)
