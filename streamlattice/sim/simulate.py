"""`streamlattice simulate`: build a scenario, run the five policies, summarise, print the table, draw the day."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice.config import Lattice
from streamlattice.placement.plan import Weights
from streamlattice.router.decisions import weights
from streamlattice.sim.energy import DEFAULT_ENERGY, EnergyModel
from streamlattice.sim.oracle import METHOD
from streamlattice.sim.scenario import Scenario, draw, from_lattice
from streamlattice.sim.simulation import POLICIES, PolicyResult, simulate

# The latency objective every carbon-aware policy (the lattice and the oracle) is held to: no event
# is served from a region farther than this from its home while a node within it has room. Tuned
# on seeds below 100 (docs/simulation/README.md): regions of one continent are within it,
# oceans are not.
LATENCY_BUDGET_MS = 20.0
P99_SLACK = 1.10  # the lattice's p99 may be at most 10% above region_local's
ORACLE_FRACTION_TARGET = 0.70


def scenario_of(lattice: Lattice, seed: int | None, load: float, regions: int | None, hours: float = 24.0) -> Scenario:
    """A scenario drawn from `seed` (and `regions`, 3 by default), or lattice.toml's regions when neither is given."""
    if seed is None and regions is None:
        return from_lattice(lattice, load, hours)
    return draw(seed or 0, load, regions or 3, hours)


def summarise(results: dict[str, PolicyResult], sc: Scenario, w: Weights, energy: EnergyModel) -> dict[str, Any]:
    """The JSON summary: each policy's figures, savings over region_local, the oracle fraction, the targets
    and the method."""
    policies = {p: results[p].summary(np.random.default_rng(0)) for p in POLICIES}
    base = policies["region_local"]

    def saving(p: str, key: str = "carbon_g_per_1k") -> float:
        return round(1 - policies[p][key] / base[key], 5)

    lat, ora = saving("lattice"), saving("oracle")
    fraction = round(lat / ora, 4) if ora > 1e-4 else None
    marginal_ora = saving("oracle", "carbon_marginal_g_per_1k")
    p99_ratio = round(policies["lattice"]["p99_ms"] / base["p99_ms"], 4) if base["p99_ms"] else None
    return {
        "policies": policies,
        "saving_vs_region_local": {p: saving(p) for p in POLICIES},
        "saving_vs_region_local_marginal": {p: saving(p, "carbon_marginal_g_per_1k") for p in POLICIES},
        "oracle_fraction": fraction,
        "oracle_fraction_marginal": (
            round(saving("lattice", "carbon_marginal_g_per_1k") / marginal_ora, 4) if marginal_ora > 1e-4 else None
        ),
        "targets": {
            "oracle_fraction": {"value": fraction, "target": ORACLE_FRACTION_TARGET, "met": _met(fraction)},
            "p99_ratio_vs_region_local": {
                "value": p99_ratio,
                "target": P99_SLACK,
                "met": p99_ratio is not None and p99_ratio <= P99_SLACK,
            },
            "overload_not_worse": {
                "value": policies["lattice"]["overload_s"] - base["overload_s"],
                "met": policies["lattice"]["overload_s"] <= base["overload_s"],
            },
        },
        "oracle_method": METHOD,
        "latency_objective": (
            "the lattice and the oracle: no node's queue p99 (M/M/1) above "
            f"{w.tail_slack:g}x the p99 of the step's load spread region-locally, and no event served from a "
            f"region farther from its home than {w.latency_budget_ms:g} ms or half that tail, whichever is less, "
            "while a node within it has room (up to 90% of its capacity); "
            f"capacity headroom {w.headroom:g} for every policy but range"
        ),
        "accounting": energy.statement(),
        "scenario": {
            "seed": sc.seed,
            "load": sc.load,
            "hours": sc.hours,
            "step_s": sc.step_s,
            "regions": [
                {
                    "name": r.name,
                    "tz_hours": r.tz_hours,
                    "power": r.power.name,
                    "demand": r.demand,
                    "partitions": len(r.partitions),
                }
                for r in sc.regions
            ],
            "nodes": len(sc.nodes),
            "node_kinds": {k: sum(n.kind == k for n in sc.nodes) for k in sorted({n.kind for n in sc.nodes})},
        },
    }


def _met(fraction: float | None) -> bool | None:
    return None if fraction is None else fraction >= ORACLE_FRACTION_TARGET


def run(
    lattice: Lattice,
    seed: int | None,
    load: float,
    regions: int | None,
    hours: float = 24.0,
    png: Path | None = None,
    budget_ms: float = LATENCY_BUDGET_MS,
    energy: EnergyModel = DEFAULT_ENERGY,
) -> dict[str, Any]:
    """Simulate a day and summarise it; draw the day to `png` if given."""
    sc = scenario_of(lattice, seed, load, regions, hours)
    w = replace(weights(lattice), latency_budget_ms=budget_ms, tail_slack=P99_SLACK)
    results = simulate(sc, w, energy)
    if png is not None:
        draw_day(results, sc, png)
    return summarise(results, sc, w, energy)


STYLES = {
    "range": ("#999999", "--"),
    "region_local": ("#4c78a8", "-."),
    "least_loaded": ("#bbbb55", ":"),
    "lattice": ("#2a9d4b", "-"),
    "oracle": ("#e45756", "-"),
}


def draw_day(results: dict[str, PolicyResult], sc: Scenario, path: Path) -> None:
    """Carbon per 1,000 inferences over the day for each policy (in mg), and where the lattice served."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.arange(len(results["lattice"].carbon_rate)) * sc.step_s / 3600
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    for policy in POLICIES:
        colour, line = STYLES[policy]
        rate = np.array(results[policy].carbon_rate) * 1000
        top.plot(hours, rate, line, color=colour, lw=2.2 if policy == "lattice" else 1.3, label=policy)
    top.set_ylabel("mgCO2e per 1,000 inferences (SCI)")
    top.set_title("A simulated day: carbon per policy, and where the lattice served (UTC hours)")
    top.legend(loc="upper right", ncol=5, frameon=False)
    top.grid(alpha=0.3)
    names = [r.name for r in sc.regions]
    shares = np.array([[step.get(n, 0.0) for n in names] for step in results["lattice"].region_share])
    bottom.stackplot(hours, shares.T, labels=names, alpha=0.85)
    bottom.set_ylabel("lattice: share of events served")
    bottom.set_xlabel("hour of the day (UTC)")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper right", ncol=min(len(names), 6), frameon=False, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summary: dict[str, Any]) -> str:
    """The summary as a table for people."""
    head = (
        f"{'policy':<13} {'gCO2e/1k':>9} {'marginal':>9} {'vs RL':>7} {'renewable':>9} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'overload s':>10} {'moves':>6}"
    )
    rows = [head]
    for p in POLICIES:
        s = summary["policies"][p]
        rows.append(
            f"{p:<13} {s['carbon_g_per_1k']:>9.5f} {s['carbon_marginal_g_per_1k']:>9.5f} "
            f"{-summary['saving_vs_region_local'][p]:>+7.1%} {s['renewable_share']:>9.1%} {s['p50_ms']:>8.1f} "
            f"{s['p99_ms']:>8.1f} {s['overload_s']:>10.0f} {s['moves']:>6}"
        )
    t = summary["targets"]
    frac = t["oracle_fraction"]["value"]
    p99 = t["p99_ratio_vs_region_local"]["value"]
    rows.append(
        "lattice vs region_local: "
        + (f"{frac:.0%} of the oracle's saving (target >= 70%)" if frac is not None else "the oracle saves nothing")
        + (f", p99 x{p99:.2f} (target <= 1.10)" if p99 is not None else "")
        + f", overload {'not worse' if t['overload_not_worse']['met'] else 'WORSE'}"
    )
    rows.append(f"oracle: {summary['oracle_method']}")
    rows.append(f"latency objective: {summary['latency_objective']}")
    rows.append(f"accounting: {summary['accounting']}")
    return "\n".join(rows)
