"""How much memory a worker's fetch read-ahead holds while it drains a backlog, side by side.

aiokafka keeps up to one fetched response per assigned partition, each up to the consumer's
`max_partition_fetch_bytes`, so a worker that owns many partitions of a backlog holds
partitions x that many bytes before it has decoded one of them. This script measures it: for
each checkout given (`--tree NAME=PATH`, alternating over `--repeats`), a fresh one-node dev
broker, `--events` sensor events published to every region, then one exactly-once worker of
that checkout draining all 12 partitions alone. It reports the worker's peak and final RSS and
the drain rate, and writes them to `--output` (markdown).

    python bench/readahead.py --tree before=../old-checkout --tree after=. --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamlattice.bench.answers import peak_rss_mb, rss_mb
from streamlattice.config import load_lattice
from streamlattice.devbroker.broker import free_port

LATTICE = load_lattice()
TASK = "sensor"


class Lag:
    """Events of the task not yet committed by its group (exactly-once: committed with results)."""

    def __init__(self, bootstrap: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": LATTICE.group_id(TASK)})
        topic = LATTICE.events_topic(TASK)
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        if not parts:
            raise RuntimeError(f"no partitions of {topic} at {bootstrap}")
        self.tps = [TopicPartition(topic, p) for p in parts]

    def __call__(self) -> int | None:
        try:
            committed = {tp.partition: max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=10)}
            ends = {tp.partition: self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.tps}
        except KafkaException:
            return None  # the group coordinator is moving (the group is new): ask again
        return sum(ends[p] - committed[p] for p in ends)

    def close(self) -> None:
        self.consumer.close()


def run_one(name: str, tree: Path, events: int) -> dict[str, float | str]:
    cli = [sys.executable, "-m", "streamlattice"]
    data = Path(tempfile.mkdtemp(prefix="sl-readahead-"))
    port = free_port()
    bootstrap = f"localhost:{port}"
    env = {**os.environ, "STREAMLATTICE_BOOTSTRAP": bootstrap}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "check": True}
    subprocess.run([*cli, "broker", "start", "--port", str(port), "--data-dir", str(data / "broker")], **quiet)
    worker, log = None, None
    try:
        subprocess.run([*cli, "topics", "init"], **quiet)
        subprocess.run([*cli, "produce", "--task", TASK, "--count", str(events)], **quiet)
        worker_env = {**env, "PYTHONPATH": str(tree.resolve())}
        log = (data / "worker.log").open("w")
        worker = subprocess.Popen(
            [*cli, "worker", "--task", TASK, "--region", "eu-west", "--exactly-once"],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tree,  # python -m puts its working directory first on the path: run the tree's code
        )
        lag = Lag(bootstrap)
        started, left = None, events
        deadline = time.monotonic() + 600
        try:
            while left:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name}: worker exited or stalled with {left} events left; see {log.name}")
                time.sleep(0.25)
                left = lag()
                left = events if left is None else left
                if started is None and left < events:
                    started = time.monotonic()  # its first commit: startup and joining are not drain time
        finally:
            lag.close()
        drain_s = time.monotonic() - (started or time.monotonic())
        time.sleep(5)
        final, peak = rss_mb(worker.pid), peak_rss_mb(worker.pid)
        return {
            "run": name,
            "peak_rss_mb": peak,
            "final_rss_mb": final,
            "drain_s": drain_s,
            "eps": events / drain_s if drain_s else 0.0,
        }
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        subprocess.run(
            [*cli, "broker", "stop", "--data-dir", str(data / "broker")],
            env=env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if log is not None:
            log.close()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tree",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a checkout whose worker to run (given twice or more: side by side)",
    )
    parser.add_argument("--events", type=int, default=150_000, help="backlog size [150000]")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over the trees [2]")
    parser.add_argument("--output", type=Path, help="markdown table to write [print only]")
    args = parser.parse_args()
    trees = [(n, Path(p)) for n, p in (t.split("=", 1) for t in args.tree)]
    rows = []
    for r in range(args.repeats):
        for name, tree in trees:
            row = run_one(f"{name} {r + 1}", tree, args.events)
            print(
                f"{row['run']}: peak {row['peak_rss_mb']:.0f} MB, final {row['final_rss_mb']:.0f} MB, "
                f"{row['eps']:,.0f} events/s",
                flush=True,
            )
            rows.append(row)
    table = ["| run | peak RSS MB | final RSS MB | drain s | events/s |", "|---|---:|---:|---:|---:|"]
    table += [
        f"| {w['run']} | {w['peak_rss_mb']:.0f} | {w['final_rss_mb']:.0f} | {w['drain_s']:.1f} | {w['eps']:,.0f} |"
        for w in rows
    ]
    if args.output:
        args.output.write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
