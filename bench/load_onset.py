"""Where a contender's slowest events of each offered load fall: how long after the load began,
and (for the streamlattice worker) in which stage, through `streamlattice bench`'s own harness.

One repeat, the harness's open-loop method. For each load it prints p99 over the events handed
over from 0, 0.1, 0.2, 0.5 and 1 s after its start, then the worker's slowest events with their
stages (to the worker, batching and inference, to the result topic, to the reader, in ms).

    python bench/load_onset.py --task vision --loads 500,1000 --contender streamlattice
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from streamlattice.bench import harness

FROM_S = (0.0, 0.1, 0.2, 0.5, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="vision")
    p.add_argument("--loads", default="500,1000", help="offered events/s, comma-separated")
    p.add_argument("--contender", default="streamlattice")
    args = p.parse_args()

    loads: list[dict[str, Any]] = []
    point, stages = harness.curve_point, harness._stages

    def kept_point(rate: float, handed: list[float], got: list[float | None], deadline_s: float) -> dict[str, Any]:
        loads.append({"rate": rate, "handed": handed, "got": got})
        return point(rate, handed, got, deadline_s)

    def kept_stages(rows: list[harness.Row]) -> dict[str, float]:
        loads[-1]["rows"] = rows
        return stages(rows)

    harness.curve_point, harness._stages = kept_point, kept_stages  # type: ignore[assignment]
    offered = tuple(float(x) for x in args.loads.split(","))
    plan = harness.Plan(
        repeats=1, backlog={args.task: 20_000}, window_s=2.0, load_s=5.0, loads={args.task: offered}, deadline_s=5.0
    )
    harness.run(plan, [args.task], [args.contender], progress=lambda line: print(line, file=sys.stderr))
    for load in loads:
        handed = np.array(load["handed"])
        latency_ms = (np.array([np.inf if g is None else g for g in load["got"]]) - handed) * 1000
        since_s = handed - handed[0]
        by_start = ", ".join(f"from {s:g} s {np.percentile(latency_ms[since_s >= s], 99):.1f}" for s in FROM_S)
        print(f"{load['rate']:.0f}/s: p50 {np.percentile(latency_ms, 50):.1f} ms; p99 {by_start} ms")
        rows = load.get("rows")
        if not rows:
            continue
        t = harness.stamps_us(rows)
        first_us = t[:, 0].min()
        for i in np.argsort(t[:, 0] - t[:, 4])[:10]:
            legs = " ".join(f"{d:6.1f}" for d in np.diff(t[i]) / 1000)
            print(f"  at {(t[i, 0] - first_us) / 1e6:6.3f} s: to worker, batch+infer, to topic, to reader (ms) {legs}")


if __name__ == "__main__":
    main()
