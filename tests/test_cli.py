"""The command line: --help everywhere, one-line errors, and the verbs against a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from conftest import REPO, WorkerProcess

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.kafka.topics import lattice_topics

VERBS = [
    [],
    ["broker"],
    ["broker", "start"],
    ["broker", "stop"],
    ["broker", "status"],
    ["broker", "install"],
    ["topics"],
    ["topics", "init"],
    ["models"],
    ["models", "build"],
    ["worker"],
    ["produce"],
    ["results"],
    ["demo"],
    ["bench"],
]


def sl(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamlattice", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: " ".join(v) or "top")
def test_every_verb_has_help(verb: list[str]) -> None:
    done = sl(*verb, "--help", timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Usage: streamlattice" in done.stdout
    assert "--help" in done.stdout


@pytest.mark.timeout(60)
def test_an_unreachable_broker_is_one_line_that_says_what_to_do() -> None:
    port = dev.free_port()
    done = sl("--bootstrap", f"localhost:{port}", "topics", "init", timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1
    assert f"localhost:{port} unreachable" in lines[0] and "streamlattice broker start" in lines[0]


def test_bad_arguments_are_refused_clearly() -> None:
    done = sl("produce", "--task", "smell", "--count", "1", timeout=60)
    assert done.returncode == 1 and "unknown task 'smell'" in done.stderr and "sensor" in done.stderr
    done = sl("produce", "--task", "sensor", "--regions", "mars", "--count", "1", timeout=60)
    assert done.returncode == 1 and "unknown region 'mars'" in done.stderr
    done = sl("broker", "start", "--nodes", "5", timeout=60)
    assert done.returncode == 2 and "--nodes" in done.stderr


@pytest.mark.kafka
@pytest.mark.timeout(180)
def test_topics_init_produce_and_results_verbs(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    base = ["--bootstrap", kafka, "--config", str(lattice.source)]
    again = sl(*base, "topics", "init")
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("found") == len(lattice_topics(lattice)) == 11  # idempotent: all there
    assert "created" not in again.stdout

    workers(lattice, "us-east").wait_assigned()
    produced = sl(*base, "produce", "--task", "sensor", "--count", "300", "--regions", "us-east,ap-south")
    assert produced.returncode == 0, produced.stderr
    assert "published 300 events" in produced.stdout and "us-east=150" in produced.stdout

    shown = sl(
        *base, "results", "--task", "sensor", "--region", "us-east", "--follow", "--from-beginning", "--limit", "150"
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 150 and all(line.startswith("us-east") for line in lines)
