"""Real power data: a CSV of timestamped readings replayed in a loop, or an HTTP JSON feed.

The only files of power/ that read anything: a CSV once when the source is made, the
feed at most every `ttl_s` (the worker reads it off its event loop).
"""

from __future__ import annotations

import csv
import json
import logging
import time
import urllib.request
from bisect import bisect_right
from datetime import datetime
from pathlib import Path

from streamlattice.errors import ConfigError
from streamlattice.power.profiles import PowerReading, mix

log = logging.getLogger(__name__)


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
