"""The streamlattice worker, started as a user starts it: `streamlattice worker` for the task in
the lattice's first region (at-least-once, the task's batch size and wait from lattice.toml).

    python bench/contenders/streamlattice_worker.py --config LATTICE --task TASK --bootstrap HOST:PORT
"""

from streamlattice.bench.answers import setup
from streamlattice.cli import cli

if __name__ == "__main__":
    s = setup("streamlattice", __doc__)
    assert s.lattice.source is not None
    cli.main(
        [
            *("--bootstrap", s.bootstrap, "--config", str(s.lattice.source), "--log-level", "WARNING"),
            *("worker", "--task", s.task, "--region", s.lattice.regions[0].name, "--node-id", "bench"),
        ],
        prog_name="streamlattice",
    )
