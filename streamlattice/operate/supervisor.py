"""A local supervisor of worker processes per (task, region), behind `streamlattice scale`.

Its state (one JSON file per namespace) survives the CLI: scaling up starts workers that
join their group; scaling down sends SIGTERM to the newest ones, which drain, commit and
leave the group before they exit. Asking for the count that runs already changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from streamlattice.config import Lattice
from streamlattice.errors import StreamLatticeError
from streamlattice.paths import data_dir


def home() -> Path:
    """Where the supervisor keeps its state and the workers' logs."""
    return data_dir() / "supervisor"


@dataclass
class Managed:
    """A worker process the supervisor started."""

    task: str
    region: str
    node_id: str
    pid: int
    log: str
    started: float

    def alive(self) -> bool:
        """Whether the process still runs (and is still a streamlattice worker)."""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return b"streamlattice" in cmdline and self.node_id.encode() in cmdline


class Supervisor:
    """Worker processes of one lattice namespace on this machine."""

    def __init__(self, lattice: Lattice, bootstrap: str) -> None:
        self.lattice = lattice
        self.bootstrap = bootstrap
        self.dir = home()
        self.state = self.dir / f"{lattice.namespace}.json"

    def workers(self) -> list[Managed]:
        """The managed workers still running (dead ones are forgotten)."""
        if not self.state.exists():
            return []
        return [w for w in (Managed(**raw) for raw in json.loads(self.state.read_text())) if w.alive()]

    def _save(self, workers: list[Managed]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps([asdict(w) for w in workers], indent=2))
        tmp.replace(self.state)

    def scale(
        self, task: str, region: str, replicas: int, extra_args: tuple[str, ...] = (), drain_timeout_s: float = 60.0
    ) -> tuple[list[Managed], list[Managed]]:
        """Run exactly `replicas` workers for (task, region); returns (started, stopped)."""
        self.lattice.task(task)
        self.lattice.region(region)
        if replicas < 0:
            raise StreamLatticeError("--replicas must be 0 or more")
        running = self.workers()
        mine = sorted((w for w in running if (w.task, w.region) == (task, region)), key=lambda w: w.started)
        others = [w for w in running if (w.task, w.region) != (task, region)]
        started: list[Managed] = []
        stopped: list[Managed] = []
        used = {w.node_id for w in running}
        while len(mine) + len(started) < replicas:
            k = 1
            while f"{region}-{task}-{k}" in used:
                k += 1
            node_id = f"{region}-{task}-{k}"
            used.add(node_id)
            started.append(self._spawn(task, region, node_id, extra_args))
        if len(mine) > replicas:
            stopped = mine[replicas:]
            mine = mine[:replicas]
            for w in stopped:
                os.kill(w.pid, signal.SIGTERM)  # the worker drains, commits and leaves its group
        self._save(others + mine + started)
        deadline = time.monotonic() + drain_timeout_s
        while any(w.alive() for w in stopped) and time.monotonic() < deadline:
            time.sleep(0.2)
        late = [w for w in stopped if w.alive()]
        if late:
            raise StreamLatticeError(
                f"{len(late)} worker(s) still draining after {drain_timeout_s:.0f}s: "
                + ", ".join(f"{w.node_id} (pid {w.pid}, log {w.log})" for w in late)
            )
        return started, stopped

    def _spawn(self, task: str, region: str, node_id: str, extra_args: tuple[str, ...]) -> Managed:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{node_id}.log"
        cmd = [sys.executable, "-m", "streamlattice", "--bootstrap", self.bootstrap]
        if self.lattice.source is not None:
            cmd += ["--config", str(self.lattice.source.resolve())]
        cmd += ["worker", "--task", task, "--region", region, "--node-id", node_id, *extra_args]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        worker = Managed(task, region, node_id, proc.pid, str(log), time.time())
        deadline = time.monotonic() + 10
        while not worker.alive() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # until the child has exec'd: before that its cmdline is ours
        return worker
