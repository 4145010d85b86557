"""When `scale --auto` changes a worker group's size: a pure decision, no I/O.

The router recommends replicas per region in its plans. Following each recommendation as it
comes makes a group flap when the load hovers around a threshold, and following a stale or
missing one scales the group down to its floor exactly when the router is down. So:
- without a fresh plan, nothing is scaled in (only raised to the floor);
- scaling out follows a fresh recommendation at once (load that is not served grows lag);
- scaling in waits until the recommendation has stayed below the current size for `cooldown_s`,
  goes only to the highest recommendation of that window, and never sooner than `cooldown_s`
  after the region's last change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Look:
    """What the autoscaler sees at one moment: the router's recommendation and its age."""

    at_s: float
    recommended: Mapping[str, int] | None  # None: no plan at all
    plan_age_s: float = 0.0


@dataclass
class Autoscaler:
    """Replica targets per region from successive looks, within [low, high], without flapping."""

    regions: tuple[str, ...]
    low: int
    high: int
    stale_s: float  # a plan older than this is not followed (the lattice's plan_stale_s)
    cooldown_s: float = 60.0
    _changed_at: dict[str, float] = field(default_factory=dict)
    # per region whose recommendation is below its size: since when, and the highest one since
    _below: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"--min {self.low} is above --max {self.high}")

    def decide(self, look: Look, running: Mapping[str, int]) -> dict[str, int]:
        """The replicas each region should run now, given how many run (`running`)."""
        fresh = look.recommended is not None and look.plan_age_s <= self.stale_s
        targets: dict[str, int] = {}
        for region in self.regions:
            now = running.get(region, 0)
            if look.recommended is None or not fresh:
                self._below.pop(region, None)  # a cool-down counts fresh plans only
                target = min(max(now, self.low), self.high)
            else:
                target = self._follow(region, look.at_s, now, look.recommended.get(region, self.low))
            if target != now:
                self._changed_at[region] = look.at_s
            targets[region] = target
        return targets

    def _follow(self, region: str, at_s: float, now: int, recommended: int) -> int:
        wanted = min(max(recommended, self.low), self.high)
        if now > self.high:  # above --max: down to it at once, lower only after a cool-down
            return self.high
        if wanted >= now:
            self._below.pop(region, None)
            return wanted
        since, peak = self._below.get(region, (at_s, wanted))
        self._below[region] = (since, max(peak, wanted))
        cooled = (
            at_s - since >= self.cooldown_s and at_s - self._changed_at.get(region, float("-inf")) >= self.cooldown_s
        )
        if not cooled:
            return now
        del self._below[region]
        return max(peak, wanted)
