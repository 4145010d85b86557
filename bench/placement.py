"""How long placement takes at internet scale: 10,000 partitions over 1,000 nodes.

Times a fresh plan, a re-plan after every node's power changed (the router's common case),
and a re-plan after 5% of the nodes died, each the median of several runs. Not a test.

    python bench/placement.py [--partitions N] [--nodes N] [--regions N] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamlattice.placement.plan import NodeState, PartitionState, Weights, make_plan  # noqa: E402


def timed(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--nodes", type=int, default=1_000)
    ap.add_argument("--regions", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--output", type=Path, default=REPO / "bench" / "placement.json")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    regions = [f"r{i}" for i in range(args.regions)]
    latency = {(a, b): float(abs(i - j) * 15) for i, a in enumerate(regions) for j, b in enumerate(regions)}
    nodes = [
        NodeState(
            f"n{i:05d}", regions[i % args.regions], float(rng.uniform(500, 2000)), 0.5, float(rng.uniform(20, 700))
        )
        for i in range(args.nodes)
    ]
    per_region = args.partitions // args.regions
    parts = [
        PartitionState(p, regions[min(p // per_region, args.regions - 1)], float(rng.uniform(0, 40)))
        for p in range(args.partitions)
    ]
    w = Weights()
    fresh = make_plan(parts, nodes, latency, w)
    repowered = [
        NodeState(n.node_id, n.region, n.capacity_eps, n.renewable_fraction, float(rng.uniform(20, 700))) for n in nodes
    ]
    survivors = [n for i, n in enumerate(nodes) if i % 20 != 0]
    result = {
        "partitions": args.partitions,
        "nodes": args.nodes,
        "regions": args.regions,
        "fresh_plan_s": round(timed(lambda: make_plan(parts, nodes, latency, w), args.repeat), 3),
        "replan_power_changed_s": round(
            timed(lambda: make_plan(parts, repowered, latency, w, previous=fresh.assignment), args.repeat), 3
        ),
        "replan_5pct_nodes_lost_s": round(
            timed(lambda: make_plan(parts, survivors, latency, w, previous=fresh.assignment), args.repeat), 3
        ),
        "moves_when_5pct_lost": make_plan(parts, survivors, latency, w, previous=fresh.assignment).moves,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result.items():
        print(f"{k:>26}: {v}")


if __name__ == "__main__":
    main()
