"""Variants of the worker side by side, through `streamlattice bench`'s own harness.

Each variant is the streamlattice worker contender (its own file) with some settings changed
before it starts (`--variant NAME:key=value,...`): `min_bytes` (the consumer's
`fetch_min_bytes`), `wait_ms` (its `fetch_max_wait_ms`) and `gc_freeze` (1 or 0: whether the
worker freezes the objects alive at start out of the garbage collector's passes). The variants
(and any contender of the benchmark, e.g. `quixstreams`) run in one harness run, alternating over
`--repeats`, at the same absolute offered loads, with the benchmark's method: open loop, unanswered events counted as
failures, p99 as the median and min-max over repeats. Writes the JSON to `--output` and prints
one line per variant.

    python bench/worker_ab.py --task sensor --variant min64k:min_bytes=65536 --variant min1:min_bytes=1 \\
        --also quixstreams --loads 500,1000,2000,5000 --repeats 3 --output /tmp/ab.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from streamlattice.bench import FILES, harness

# A variant is the worker contender's own file, run after the settings are changed.
VARIANT = """
import runpy

from streamlattice.worker import runtime

runtime.FETCH_MIN_BYTES = {min_bytes}
runtime.FETCH_WAIT_MS = {wait_ms}
runtime.FREEZE_AT_START = bool({gc_freeze})
runpy.run_path({contender!r}, run_name="__main__")
"""


def variant_settings(spec: str) -> tuple[str, dict[str, int]]:
    """`NAME:key=value,...` as (name, settings), the worker's own values for keys not given."""
    from streamlattice.worker.intake import FETCH_MIN_BYTES, FETCH_WAIT_MS
    from streamlattice.worker.runtime import FREEZE_AT_START

    name, _, pairs = spec.partition(":")
    settings = {"min_bytes": FETCH_MIN_BYTES, "wait_ms": FETCH_WAIT_MS, "gc_freeze": int(FREEZE_AT_START)}
    for pair in filter(None, pairs.split(",")):
        key, _, value = pair.partition("=")
        if key not in settings:
            raise SystemExit(f"--variant {spec}: unknown setting {key!r} (one of {', '.join(settings)})")
        settings[key] = int(value)
    return name, settings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sensor")
    p.add_argument("--variant", action="append", required=True, help="NAME:key=value,... (repeatable)")
    p.add_argument("--also", default="", help="comma-separated benchmark contenders to run beside them")
    p.add_argument("--loads", default="500,1000,2000,5000", help="offered events/s, comma-separated")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--output", type=Path, required=True)
    args = p.parse_args()

    (worker,) = FILES["streamlattice"]
    contender = str(harness.contenders_dir() / worker)
    variants: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sl-worker-ab-") as tmp:
        for spec in args.variant:
            name, settings = variant_settings(spec)
            path = Path(tmp) / f"{name}.py"
            path.write_text(VARIANT.format(contender=contender, **settings))
            FILES[name] = (str(path),)  # an absolute path: the harness joins it to contenders/ as is
            variants.append(name)
        curve = harness.TaskBench._curve

        def as_worker(bench: harness.TaskBench, name: str, file: str, lattice: Any, max_eps: float) -> Any:
            # a variant is the worker: its stages and its 50%-of-own-max point, as the benchmark takes them
            return curve(bench, "streamlattice" if name in variants else name, file, lattice, max_eps)

        harness.TaskBench._curve = as_worker  # type: ignore[method-assign]
        loads = tuple(float(x) for x in args.loads.split(","))
        plan = harness.Plan(
            repeats=args.repeats,
            backlog={args.task: 30_000},
            window_s=2.0,
            load_s=5.0,
            loads={args.task: loads},
            deadline_s=5.0,
        )
        contenders = [c for c in args.also.split(",") if c] + variants
        result = harness.run(plan, [args.task], contenders, progress=lambda line: print(line, file=sys.stderr))
    args.output.write_text(json.dumps(result, indent=1))
    for name, m in result["tasks"][args.task]["contenders"].items():
        points = "; ".join(
            f"{p['offered_eps']:.0f}{'*' if p.get('own_half') else ''}/s "
            f"{p['p99_ms']} ({p['p99_min_ms']}-{p['p99_max_ms']})"
            for p in m["curve"]
        )
        print(f"{name}: {m['throughput_eps']:.0f} events/s; p99 ms: {points}")


if __name__ == "__main__":
    main()
