"""The README's main command, headless: `streamlattice demo --duration 90`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.kafka
@pytest.mark.timeout(420)
def test_the_demo_runs_headless_and_every_region_of_every_task_answers(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMLATTICE_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "streamlattice", "demo", "--duration", "90"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = re.findall(r"^(sensor|vision|language)\s+(\S+)\s+(\d+)\s+(\d+)\s", done.stdout, re.M)
    assert {(task, region) for task, region, _, _ in rows} == {
        (t, r) for t in ("sensor", "vision", "language") for r in ("eu-west", "us-east", "ap-south")
    }
    for task, region, sent, results in rows:
        assert int(sent) > 0 and int(results) == int(sent), f"{task} {region}: {results} of {sent}"
    assert "results flowed in every region of every task" in done.stdout
    assert "stopped 1 node(s)" in done.stdout  # the broker it started is stopped again
