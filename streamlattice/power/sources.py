"""A node's power source from its spec string, and the meter that reads it on a clock.

Spec strings, as `--power` and lattice.toml's `power` take them:

    solar[:clouds=0.3,seed=1]   the sun over the region's time zone, with passing clouds
    wind[:seed=2]               gusty renewable supply that drifts over hours
    grid                        a fossil-heavy grid whose carbon peaks in the evening
    static:renewable=0.9,carbon=40
    csv:PATH                    timestamped readings (epoch seconds or ISO 8601), replayed in a loop
    http://HOST/PATH            a JSON feed: {"renewable_fraction": .., "carbon_intensity": ..}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streamlattice.errors import ConfigError
from streamlattice.power.feeds import CsvSource, HttpSource
from streamlattice.power.profiles import DIRTY_G_PER_KWH, Clock, Grid, PowerReading, PowerSource, Solar, Static, Wind


@dataclass
class PowerMeter:
    """The node's power source read on a (possibly accelerated) clock, cached between heartbeats."""

    source: PowerSource
    clock: Clock
    reading: PowerReading = field(init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> PowerReading:
        """Read the source now."""
        self.reading = self.source.read(self.clock.now())
        return self.reading


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
