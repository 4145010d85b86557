"""The simulator: Kafka's assignors as baselines, and the lattice against them over a day."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

from streamlattice.config import DEFAULT_CONFIG, load_lattice
from streamlattice.sim.simulate import run
from streamlattice.sim.simulation import range_assignment, roundrobin_assignment


def test_range_and_roundrobin_assign_like_kafka() -> None:
    assert range_assignment(list(range(5)), ["b", "a"]) == {0: "a", 1: "a", 2: "a", 3: "b", 4: "b"}
    assert roundrobin_assignment(list(range(5)), ["b", "a"]) == {0: "a", 1: "b", 2: "a", 3: "b", 4: "a"}


def test_over_a_day_the_lattice_meets_its_carbon_latency_and_overload_targets() -> None:
    summary = run(load_lattice(DEFAULT_CONFIG), 24, None, None, 0.3, None)
    t = summary["targets"]
    assert t["carbon_reduction_vs_range"] >= 0.30
    assert t["p99_ratio_vs_range"] <= 1.10
    assert t["overload_not_worse"]
    lattice, rng = summary["lattice"], summary["range"]
    assert lattice["renewable_share"] > rng["renewable_share"]
    assert rng["moves"] == 0 and lattice["moves"] > 0


def test_the_cli_prints_json_and_draws_the_day(tmp_path: Path) -> None:
    png = tmp_path / "day.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamlattice",
            "simulate",
            "--hours",
            "6",
            "--regions",
            "4",
            "--json",
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    for policy in ("range", "roundrobin", "capacity", "lattice"):
        assert set(summary[policy]) == {"carbon_g_per_1k", "renewable_share", "p50_ms", "p99_ms", "overload_s", "moves"}
    assert summary["scenario"]["regions"] == ["r0", "r1", "r2", "r3"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
