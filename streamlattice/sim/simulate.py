"""`streamlattice simulate`: build a scenario, run the simulator, print the table, draw the day."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice.config import Lattice
from streamlattice.power.profiles import Grid, PowerSource, Solar, Wind
from streamlattice.power.sources import parse_power
from streamlattice.router.decisions import weights
from streamlattice.sim.simulation import POLICIES, PolicyResult, Scenario, SimNode, SimRegion, simulate, synthetic

START = datetime(2026, 6, 21, tzinfo=UTC).timestamp()  # a fixed day: the same run every time


def mixed_power(i: int, tz: float) -> PowerSource:
    """Synthetic regions take turns: solar, wind, a fossil-heavy grid."""
    return (Solar(tz_hours=tz, seed=i), Wind(seed=i + 1), Grid(tz_hours=tz))[i % 3]


NODES_PER_REGION = 3


def scenario(lattice: Lattice, hours: float, regions: int | None, nodes: int | None, load: float) -> Scenario:
    """The lattice.toml's regions and power, or a synthetic lattice of `regions` regions.

    `load` is the day's mean load as a share of the lattice's capacity.
    """
    w = weights(lattice)
    if regions is not None:
        return synthetic(regions, nodes or NODES_PER_REGION * regions, mixed_power, w, START, hours, utilisation=load)
    n_nodes = nodes or NODES_PER_REGION * len(lattice.regions)
    base = synthetic(len(lattice.regions), n_nodes, mixed_power, w, START, hours, utilisation=load)
    peak = base.regions[0].peak_eps * len(base.regions) * 4 / lattice.total_partitions
    sim_regions = [SimRegion(r.name, list(r.block), r.tz_hours, peak) for r in lattice.regions]
    sim_nodes = []
    for k in range(n_nodes):
        r = lattice.regions[k % len(lattice.regions)]
        sim_nodes.append(
            SimNode(f"{r.name}-{k // len(lattice.regions)}", r.name, 1000.0, 15.0, parse_power(r.power, r.tz_hours))
        )
    return Scenario(sim_regions, sim_nodes, lattice.latency_ms, w, START, hours)


def run(
    lattice: Lattice, hours: float, regions: int | None, nodes: int | None, load: float, png: Path | None
) -> dict[str, Any]:
    """Simulate and summarise; draw the day to `png` if given."""
    sc = scenario(lattice, hours, regions, nodes, load)
    results = simulate(sc)
    rng = np.random.default_rng(0)
    summary: dict[str, Any] = {p: results[p].summary(rng) for p in POLICIES}
    rangep, lat = summary["range"], summary["lattice"]
    summary["targets"] = {
        "carbon_reduction_vs_range": round(1 - lat["carbon_g_per_1k"] / rangep["carbon_g_per_1k"], 4),
        "p99_ratio_vs_range": round(lat["p99_ms"] / rangep["p99_ms"], 4) if rangep["p99_ms"] else None,
        "overload_not_worse": lat["overload_s"] <= rangep["overload_s"],
    }
    summary["scenario"] = {
        "hours": hours,
        "regions": [r.name for r in sc.regions],
        "nodes": len(sc.nodes),
        "load": load,
        "step_s": sc.step_s,
    }
    if png is not None:
        draw(results, sc, png)
    return summary


def draw(results: dict[str, PolicyResult], sc: Scenario, path: Path) -> None:
    """Carbon per 1,000 inferences over the day for each policy (in mg), and where the lattice served."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.arange(len(results["lattice"].carbon_rate)) * sc.step_s / 3600
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    styles = {
        "range": ("#999999", "--"),
        "roundrobin": ("#bbbb55", ":"),
        "capacity": ("#5577cc", "-."),
        "lattice": ("#2a9d4b", "-"),
    }
    for policy in POLICIES:
        colour, line = styles[policy]
        top.plot(
            hours,
            np.array(results[policy].carbon_rate) * 1000,
            line,
            color=colour,
            lw=2.2 if policy == "lattice" else 1.4,
            label=policy,
        )
    top.set_ylabel("mgCO2 per 1,000 inferences")
    top.set_title("A simulated day: carbon per policy, and where the lattice served (UTC hours)")
    top.legend(loc="upper right", ncol=4, frameon=False)
    top.grid(alpha=0.3)
    names = [r.name for r in sc.regions]
    shares = np.array([[step.get(n, 0.0) for n in names] for step in results["lattice"].region_share])
    bottom.stackplot(
        hours,
        shares.T,
        labels=names,
        alpha=0.85,
        colors=["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#eeca3b"][: len(names)],
    )
    bottom.set_ylabel("lattice: share of partitions")
    bottom.set_xlabel("hour of the day (UTC)")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper right", ncol=len(names), frameon=False, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict[str, Any]) -> str:
    """The summary as a table for people."""
    head = f"{'policy':<11} {'gCO2/1k':>9} {'renewable':>9} {'p50 ms':>8} {'p99 ms':>8} {'overload s':>10} {'moves':>6}"
    rows = [head]
    for p in POLICIES:
        s = summary[p]
        rows.append(
            f"{p:<11} {s['carbon_g_per_1k']:>9.5f} {s['renewable_share']:>9.1%} {s['p50_ms']:>8.1f} "
            f"{s['p99_ms']:>8.1f} {s['overload_s']:>10.0f} {s['moves']:>6}"
        )
    t = summary["targets"]
    rows.append(
        f"lattice vs range: {t['carbon_reduction_vs_range']:.1%} less carbon (target >= 30%), "
        f"p99 x{t['p99_ratio_vs_range']:.2f} (target <= 1.10), "
        f"overload {'not worse' if t['overload_not_worse'] else 'WORSE'}"
    )
    return "\n".join(rows)
