"""Where a node's power comes from: simulated profiles, a CSV of readings, or an HTTP JSON feed.

Every source answers `read(t)` for a time `t` (seconds since the epoch) with the renewable
fraction of the node's electricity and its grid's carbon intensity (gCO2/kWh). The
profiles are pure functions of time, deterministic for a seed; a `Clock` lets a day of
power pass in minutes for demos and tests. Spec strings, as `--power` takes them:

    solar[:clouds=0.3,seed=1]   the sun over the region's time zone, with passing clouds
    wind[:seed=2]               gusty renewable supply that drifts over hours
    grid                        a fossil-heavy grid whose carbon peaks in the evening
    static:renewable=0.9,carbon=40
    csv:PATH                    timestamped readings (epoch seconds or ISO 8601), replayed in a loop
    http://HOST/PATH            a JSON feed: {"renewable_fraction": .., "carbon_intensity": ..}
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
import urllib.request
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from streamlattice.errors import ConfigError

log = logging.getLogger(__name__)

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


class CsvSource:
    """Readings from a CSV file (time, renewable_fraction, carbon_intensity), interpolated and looped."""

    def __init__(self, path: Path) -> None:
        self.name = f"csv:{path.name}"
        rows: list[tuple[float, float, float]] = []
        try:
            with path.open() as f:
                for row in csv.DictReader(f):
                    rows.append(
                        (_timestamp(row["time"]), float(row["renewable_fraction"]), float(row["carbon_intensity"]))
                    )
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(
                f"power CSV {path} unreadable ({e}); it needs columns time, renewable_fraction, carbon_intensity"
            ) from None
        if len(rows) < 2:
            raise ConfigError(f"power CSV {path} needs at least two readings")
        rows.sort()
        self.times = [r[0] for r in rows]
        self.rows = rows
        self.span = self.times[-1] - self.times[0]

    def read(self, t: float) -> PowerReading:
        """The interpolated reading at `t`, looping over the file's time span."""
        t0 = self.times[0]
        x = t0 + ((t - t0) % self.span if self.span else 0.0)
        i = min(max(bisect_right(self.times, x) - 1, 0), len(self.rows) - 2)
        (ta, ra, ca), (tb, rb, cb) = self.rows[i], self.rows[i + 1]
        w = 0.0 if tb == ta else min(max((x - ta) / (tb - ta), 0.0), 1.0)
        return PowerReading(ra + (rb - ra) * w, ca + (cb - ca) * w)


def _timestamp(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class HttpSource:
    """A JSON feed of the current reading, fetched at most every `ttl_s`; the last good one on failure."""

    def __init__(self, url: str, ttl_s: float = 2.0, timeout_s: float = 2.0) -> None:
        self.name = "http"
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._last: PowerReading | None = None
        self._fetched = 0.0
        self._failing = False

    def read(self, t: float) -> PowerReading:
        """The feed's reading (the time is the feed's business)."""
        if self._last is None or time.monotonic() - self._fetched >= self.ttl_s:
            try:
                with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                    raw = json.loads(resp.read())
                self._last = PowerReading(float(raw["renewable_fraction"]), float(raw["carbon_intensity"]))
                self._failing = False
            except (OSError, ValueError, KeyError, TypeError) as e:
                if not self._failing:
                    log.warning("power feed %s failed (%s); keeping the last reading", self.url, e)
                self._failing = True
                if self._last is None:
                    self._last = mix(0.0)  # assume the worst until the feed answers
            self._fetched = time.monotonic()
        return self._last


def parse_power(spec: str, tz_hours: float = 0.0) -> PowerSource:
    """A power source from its spec string (see the module docstring)."""
    if spec.startswith(("http://", "https://")):
        return HttpSource(spec)
    kind, _, rest = spec.partition(":")
    if kind == "csv":
        return CsvSource(Path(rest))
    try:
        opts = {k.strip(): float(v) for k, v in (p.split("=", 1) for p in rest.split(",") if p.strip())}
    except ValueError:
        raise ConfigError(f"power spec {spec!r}: options are name=number pairs, e.g. solar:clouds=0.3") from None
    seed = int(opts.pop("seed", 0))
    try:
        if kind == "solar":
            return Solar(tz_hours=tz_hours, seed=seed, **opts)  # type: ignore[arg-type]
        if kind == "wind":
            return Wind(seed=seed or 1, **opts)  # type: ignore[arg-type]
        if kind == "grid":
            return Grid(tz_hours=tz_hours, **opts)  # type: ignore[arg-type]
        if kind == "static":
            return Static(opts.get("renewable", 0.0), opts.get("carbon", DIRTY_G_PER_KWH))
    except TypeError as e:
        raise ConfigError(f"power spec {spec!r}: {e}") from None
    raise ConfigError(f"unknown power source {spec!r} (solar, wind, grid, static:..., csv:PATH, http://...)")
