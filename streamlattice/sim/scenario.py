"""Scenarios for the simulator: regions, nodes, power and demand, drawn from a seed.

Pure and deterministic: the same seed, load and region count give the same scenario.
A drawn scenario places its regions on a globe (longitude sets the time zone, distance
sets the latency), gives each region 2 to 5 heterogeneous nodes (small CPU, large CPU or
accelerator: capacity, idle and busy watts differ), a power mix (solar, wind or a
fossil-heavy grid over a low-carbon base, with its own fossil fleet) and a demand curve
(business hours, evening or flat, in local time) scaled so that the lattice's busiest moment
of the day asks for `load` of its capacity (a region may still peak above its own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from streamlattice.config import Lattice
from streamlattice.power.profiles import CLEAN_G_PER_KWH, Grid, PowerSource, Solar, Wind, local_hour
from streamlattice.power.sources import parse_power

START = 1782000000.0  # 2026-06-21 00:00 UTC: a fixed day, the same run every time
FIBRE_KM_PER_MS = 100.0  # one-way: light in fibre (~200 km/ms) over a route ~2x the great circle


@dataclass(frozen=True)
class NodeKind:
    """A kind of node: what it sustains and what it draws."""

    name: str
    capacity_eps: tuple[float, float]  # drawn uniformly in this range
    idle_w: tuple[float, float]
    busy_w: tuple[float, float]  # drawn on top of idle at full utilisation
    embodied_kg: float  # manufacturing and transport, kgCO2e over its life


NODE_KINDS = (
    NodeKind("cpu-small", (400.0, 800.0), (40.0, 70.0), (60.0, 110.0), 1000.0),
    NodeKind("cpu-large", (1000.0, 2000.0), (90.0, 150.0), (140.0, 240.0), 1800.0),
    NodeKind("accelerator", (3000.0, 6000.0), (60.0, 120.0), (180.0, 320.0), 2500.0),
)


@dataclass(frozen=True)
class RegionPower:
    """A region's grid: a renewable share over time, its fossil fleet's average and marginal intensity.

    Average intensity = renewable share x 20 g + the rest x `fossil_g`. Marginal intensity (the
    unit that answers one more kWh): `marginal_g` (the dispatchable fossil unit) while the
    renewable share is below `curtail_share`; above it renewables are being curtailed, and the
    marginal intensity falls linearly to 20 g at `curtail_share` + 0.15.
    """

    shape: PowerSource
    fossil_g: float
    marginal_g: float
    curtail_share: float

    @property
    def name(self) -> str:
        """The shape's name (solar, wind, grid)."""
        return self.shape.name

    def renewable(self, t: float) -> float:
        """Renewable share of the grid at `t`."""
        return self.shape.read(t).renewable_fraction

    def average_g(self, t: float) -> float:
        """Average grid intensity at `t`, gCO2/kWh."""
        r = self.renewable(t)
        return CLEAN_G_PER_KWH * r + self.fossil_g * (1 - r)

    def marginal_g_at(self, t: float) -> float:
        """Marginal grid intensity at `t`, gCO2/kWh."""
        surplus = min(max((self.renewable(t) - self.curtail_share) / 0.15, 0.0), 1.0)
        return self.marginal_g + (CLEAN_G_PER_KWH - self.marginal_g) * surplus


@dataclass(frozen=True)
class SimNode:
    """A node: where it is, how fast it serves, what it draws."""

    node_id: str
    region: str
    capacity_eps: float
    idle_w: float
    busy_w: float  # on top of idle, at full utilisation
    kind: str = "cpu-large"
    embodied_kg: float = 1800.0

    @property
    def joules_per_event(self) -> float:
        """The busy energy one more event costs on this node."""
        return self.busy_w / self.capacity_eps


@dataclass(frozen=True)
class SimRegion:
    """A region: its partitions, their share of its demand, its time zone, grid and demand curve."""

    name: str
    partitions: Sequence[int]
    weights: Sequence[float]  # share of the region's events per partition (sums to 1)
    tz_hours: float
    power: RegionPower
    demand: str  # "business", "evening" or "flat"
    peak_eps: float  # events/s of the whole region at the top of its curve


@dataclass(frozen=True)
class Scenario:
    """Everything a simulated day needs."""

    regions: Sequence[SimRegion]
    nodes: Sequence[SimNode]  # in their natural order: by region as listed, then as listed within it
    latency_ms: Mapping[tuple[str, str], float]
    start: float = START
    hours: float = 24.0
    step_s: float = 300.0
    seed: int = 0
    load: float = 0.45

    @property
    def capacity_eps(self) -> float:
        """The lattice's capacity, events/s."""
        return sum(n.capacity_eps for n in self.nodes)


def demand_shape(kind: str, hour: float) -> float:
    """Relative demand at local `hour` for a curve kind, between 0 and 1."""
    if kind == "business":
        return 0.25 + 0.75 * max(0.0, math.sin(math.pi * (hour - 7.0) / 12.0)) ** 2
    if kind == "evening":
        return 0.3 + 0.7 * math.exp(-(((hour - 20.5 + 12) % 24 - 12) ** 2) / 8.0)
    return 0.75 + 0.1 * math.sin(2 * math.pi * hour / 24.0)


def _shape_mean(kind: str) -> float:
    return float(np.mean([demand_shape(kind, h / 12) for h in range(24 * 12)]))


def region_demand(region: SimRegion, t: float) -> float:
    """Events/s of the whole region at `t`."""
    return region.peak_eps * demand_shape(region.demand, local_hour(t, region.tz_hours))


def partition_loads(scenario: Scenario, t: float) -> dict[int, float]:
    """Events/s per partition at `t`."""
    out: dict[int, float] = {}
    for r in scenario.regions:
        total = region_demand(r, t)
        for p, w in zip(r.partitions, r.weights, strict=True):
            out[p] = total * w
    return out


def draw(seed: int, load: float, regions: int, hours: float = 24.0, step_s: float = 300.0) -> Scenario:
    """A scenario of `regions` regions whose busiest moment asks for `load` of the lattice's capacity."""
    rng = np.random.default_rng([seed, regions])
    # regions cluster on continents, so some neighbours are a few ms apart and others an ocean
    continents = rng.uniform(-150, 150, size=max(1, regions // 3 + 1))
    lon = np.array([rng.choice(continents) + rng.normal(0, 12) for _ in range(regions)])
    lat = rng.uniform(-35, 60, size=regions)
    order = np.argsort(lon)
    lon, lat = lon[order], lat[order]
    names = [f"r{i}" for i in range(regions)]
    latency: dict[tuple[str, str], float] = {}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            km = _great_circle_km(lat[i], lon[i], lat[j], lon[j])
            latency[(a, b)] = 0.0 if i == j else round(2.0 + km / FIBRE_KM_PER_MS, 1)
    nodes: list[SimNode] = []
    region_cap: list[float] = []
    for name in names:
        cap = 0.0
        for k in range(int(rng.integers(2, 6))):
            kind = NODE_KINDS[int(rng.choice(3, p=[0.35, 0.45, 0.2]))]
            node = SimNode(
                f"{name}-{k}",
                name,
                round(float(rng.uniform(*kind.capacity_eps))),
                round(float(rng.uniform(*kind.idle_w)), 1),
                round(float(rng.uniform(*kind.busy_w)), 1),
                kind.name,
                kind.embodied_kg,
            )
            nodes.append(node)
            cap += node.capacity_eps
        region_cap.append(cap)
    sim_regions: list[SimRegion] = []
    first = 0
    hot = rng.uniform(0.6, 1.4, size=regions)  # some regions run hotter than their nodes
    mean_eps = load * sum(region_cap) * hot * np.array(region_cap) / float(np.sum(hot * np.array(region_cap)))
    for i, name in enumerate(names):
        tz = round(float(lon[i]) / 15.0 * 2) / 2
        n_parts = int(rng.integers(8, 17))
        w = rng.lognormal(0.0, 0.4, size=n_parts)
        curve = str(rng.choice(["business", "evening", "flat"], p=[0.5, 0.3, 0.2]))
        sim_regions.append(
            SimRegion(
                name,
                range(first, first + n_parts),
                tuple(float(x) for x in w / w.sum()),
                tz,
                _draw_power(rng, tz, seed * 100 + i),
                curve,
                float(mean_eps[i]) / _shape_mean(curve),
            )
        )
        first += n_parts
    sc = Scenario(sim_regions, nodes, latency, START, hours, step_s, seed, load)
    busiest = max(sum(region_demand(r, START + k * 300.0) for r in sim_regions) for k in range(288))
    scale = load * sc.capacity_eps / busiest
    sim_regions = [replace(r, peak_eps=r.peak_eps * scale) for r in sim_regions]
    return replace(sc, regions=sim_regions)


def _draw_power(rng: np.random.Generator, tz: float, noise_seed: int) -> RegionPower:
    kind = str(rng.choice(["solar", "wind", "grid"]))
    base = float(rng.uniform(0.0, 0.35))  # hydro and nuclear under the weather
    shape: PowerSource
    if kind == "solar":
        peak = float(rng.uniform(0.5, 0.9))
        shape = Solar(tz, float(rng.uniform(0.1, 0.6)), max(peak, base + 0.1), base, noise_seed)
    elif kind == "wind":
        low = base + float(rng.uniform(0.0, 0.2))
        shape = Wind(low, min(0.95, low + float(rng.uniform(0.3, 0.6))), noise_seed)
    else:
        shape = Grid(tz, 0.1 + base / 2, float(rng.uniform(0.03, 0.12)))
    coal = float(rng.uniform(0.0, 1.0))  # share of coal in the fossil fleet, the rest gas
    fossil = 450.0 + 500.0 * coal
    marginal = 950.0 if coal > 0.7 else 480.0  # coal or gas at the margin
    return RegionPower(shape, round(fossil, 1), marginal, float(rng.uniform(0.6, 0.85)))


def _great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return 6371.0 * math.acos(min(1.0, max(-1.0, c)))


def from_lattice(lattice: Lattice, load: float, hours: float = 24.0, nodes_per_region: int = 3) -> Scenario:
    """lattice.toml's regions, latency and power, with identical CPU nodes (1,000 events/s, 60 W idle,
    120 W busy) and a business-hours demand curve peaking at `load` of each region's capacity."""
    regions = []
    nodes = []
    for r in lattice.regions:
        for k in range(nodes_per_region):
            nodes.append(SimNode(f"{r.name}-{k}", r.name, 1000.0, 60.0, 120.0))
        source = parse_power(r.power, r.tz_hours)
        peak = load * nodes_per_region * 1000.0
        power = RegionPower(source, 700.0, 480.0, 0.75)
        weights = tuple(1.0 / r.partitions for _ in range(r.partitions))
        regions.append(SimRegion(r.name, list(r.block), weights, r.tz_hours, power, "business", peak))
    latency = dict(lattice.latency_ms)
    worst = max(latency.values(), default=100.0)
    for a in lattice.regions:
        for b in lattice.regions:
            latency.setdefault((a.name, b.name), 0.0 if a.name == b.name else worst)
    return Scenario(regions, nodes, latency, START, hours, 300.0, 0, load)
