"""Emulated regions: a lattice's regions on this machine, one real Kafka broker each, as far apart
as lattice.toml says, and cuttable.

- One KRaft node (broker and controller) per region, with `broker.rack` = the region's name and
  the rack-aware replica selector, so a consumer with `client.rack` may read from the nearest
  replica (KIP-392; the lattice's own consumers do not, see `settings`). Topics made by
  `ensure_topics` lead each region's partitions from its own broker, with a follower in every
  other region.
- Every hop between regions goes through a Toxiproxy proxy that delays it by the pair's one-way
  latency each way. Clients pick their region by the listener they bootstrap from: each broker
  has one listener per region and role, advertised as the proxy from that region. Brokers talk
  to each other (replication, the KRaft quorum) by host names that each broker's JVM resolves
  from a hosts file of its own (`jdk.net.hosts.file`) to a loopback address where the proxy of
  that pair listens, so replication from eu-west to ap-south pays eu-west to ap-south's delay.
- Two roles of client: `dc`, the region's servers (workers, router), and `edge`, the region's
  users (producers of its events, subscribers to its results). Cutting a region isolates its
  data centre: its broker and servers lose every link outside it, its users lose the way to it
  and keep their links to the other regions (their traffic fails over there, farther away).

Not emulated: bandwidth, loss and jitter (fixed delay only), and a data centre's own network.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.devbroker.toxiproxy import Link, Toxiproxy
from streamlattice.errors import DevBrokerError
from streamlattice.kafka.clients import KafkaSettings, make_admin, start_client, wait_for_brokers

ROLES = ("dc", "edge")
HOSTS = "regions.test"  # brokers' names among themselves: node-<id>.regions.test (a reserved TLD)


@dataclass
class RegionBroker:
    """One region's broker: its ports, and the proxy ports its listeners are advertised at."""

    node_id: int
    region: str
    controller_port: int
    internal_port: int
    ports: dict[str, int] = field(default_factory=dict)  # listener -> the broker's own port
    advertised: dict[str, int] = field(default_factory=dict)  # listener -> the proxy's port
    pid: int | None = None

    @property
    def host(self) -> str:
        """Its name among the brokers."""
        return f"node-{self.node_id}.{HOSTS}"


@dataclass(frozen=True)
class Hop:
    """What a proxy carries: a client of `role` in region `src` (or a broker, role "broker" or
    "controller") to the broker of region `dst`."""

    role: str
    src: str
    dst: str

    @property
    def name(self) -> str:
        """The proxy's name."""
        return f"{self.role}-{self.src}-to-{self.dst}"


def listener(role: str, index: int) -> str:
    """The listener name of clients of `role` in the region at `index` (Kafka wants it upper case)."""
    return f"{role.upper()}{index}"


def cut_hops(hops: Sequence[Hop], region: str) -> list[Hop]:
    """The hops a cut of `region` blackholes: every hop into its broker from outside, every hop out
    of its brokers and servers to another region, and its users' way to it. Its users keep their
    hops to the other regions; its servers keep their own broker."""
    cut = []
    for h in hops:
        into = h.dst == region and (h.src != region or h.role == "edge")
        out = h.src == region and h.dst != region and h.role != "edge"
        if into or out:
            cut.append(h)
    return cut


class EmulatedRegions:
    """The brokers, proxies and hosts files of one emulated lattice, in `data_dir`."""

    def __init__(self, data_dir: Path, lattice: Lattice, latency_scale: float = 1.0) -> None:
        self.data_dir = data_dir.resolve()
        self.lattice = lattice
        self.latency_scale = latency_scale  # 0: the same proxies, no delay (a control run)
        self.regions = [r.name for r in lattice.regions]
        if len(self.regions) not in (1, 3, 5):
            raise DevBrokerError(f"emulated regions want 1, 3 or 5 regions (a KRaft quorum), not {len(self.regions)}")
        self.brokers: list[RegionBroker] = []
        self.hops: list[Hop] = []
        self.proxy: Toxiproxy | None = None
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cut_regions: set[str] = set()
        self._jars: Path | None = None

    def latency(self, a: str, b: str) -> float:
        """One-way latency between two regions, ms."""
        return 0.0 if a == b else self.lattice.latency_ms.get((a, b), 0.0) * self.latency_scale

    def broker(self, region: str) -> RegionBroker:
        """The broker of `region`."""
        return next(b for b in self.brokers if b.region == region)

    # ---- clients ---------------------------------------------------------------------------

    def bootstrap(self, region: str, role: str = "dc") -> str:
        """The bootstrap of a client of `role` in `region`: every broker, through its proxies."""
        name = listener(role, self.regions.index(region))
        return ",".join(f"127.0.0.1:{b.advertised[name]}" for b in self.brokers)

    def settings(
        self, region: str, role: str = "dc", client_id: str = "streamlattice", request_timeout_ms: int = 30_000
    ) -> KafkaSettings:
        """Settings of a client of `role` in `region`. No client.rack: consumers read from leaders
        (aiokafka 0.14's rack-aware fetching stalled worker groups' rebalances; and for a region's
        users a follower at home is the one replica they cannot reach when their region is cut)."""
        return KafkaSettings(
            bootstrap=self.bootstrap(region, role),
            client_id=client_id,
            rack=None,
            request_timeout_ms=request_timeout_ms,
        )

    # ---- set-up ----------------------------------------------------------------------------

    def _plan(self) -> list[Link]:
        """Ports for every broker and proxy, and the links between them."""
        free: set[int] = set()

        def port() -> int:
            while True:
                p = dev.free_port()
                if p not in free:
                    free.add(p)
                    return p

        self.brokers = []
        for i, region in enumerate(self.regions):
            b = RegionBroker(i + 1, region, port(), port())
            for j in range(len(self.regions)):
                for role in ROLES:
                    b.ports[listener(role, j)] = port()
                    b.advertised[listener(role, j)] = port()
            self.brokers.append(b)
        links: list[Link] = []
        self.hops = []
        for b in self.brokers:
            for j, src in enumerate(self.regions):
                for role in ROLES:
                    name = listener(role, j)
                    hop = Hop(role, src, b.region)
                    self.hops.append(hop)
                    links.append(
                        Link(
                            hop.name,
                            f"127.0.0.1:{b.advertised[name]}",
                            f"127.0.0.1:{b.ports[name]}",
                            self.latency(src, b.region),
                        )
                    )
            for a in self.brokers:  # a's replication fetches and quorum traffic to b
                if a is b:
                    continue
                address = self._address(a, b)
                for role, p in (("broker", b.internal_port), ("controller", b.controller_port)):
                    hop = Hop(role, a.region, b.region)
                    self.hops.append(hop)
                    links.append(Link(hop.name, f"{address}:{p}", f"127.0.0.1:{p}", self.latency(a.region, b.region)))
        return links

    @staticmethod
    def _address(a: RegionBroker, b: RegionBroker) -> str:
        """The loopback address where broker a finds broker b (127.0.0.1 for itself)."""
        return "127.0.0.1" if a is b else f"127.0.{a.node_id}.{b.node_id}"

    def _properties(self, b: RegionBroker, node_dir: Path) -> str:
        names = list(b.ports)
        lines: dict[str, object] = {
            "process.roles": "broker,controller",
            "node.id": b.node_id,
            "broker.rack": b.region,
            "controller.quorum.voters": ",".join(f"{x.node_id}@{x.host}:{x.controller_port}" for x in self.brokers),
            "listeners": ",".join(
                [f"CONTROLLER://127.0.0.1:{b.controller_port}", f"INTERNAL://127.0.0.1:{b.internal_port}"]
                + [f"{name}://127.0.0.1:{b.ports[name]}" for name in names]
            ),
            "advertised.listeners": ",".join(
                [f"INTERNAL://{b.host}:{b.internal_port}"]
                + [f"{name}://127.0.0.1:{b.advertised[name]}" for name in names]
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "INTERNAL",
            "listener.security.protocol.map": ",".join(
                f"{name}:PLAINTEXT" for name in ["CONTROLLER", "INTERNAL", *names]
            ),
            # KIP-392: consumers with client.rack fetch from a replica in their rack
            "replica.selector.class": "org.apache.kafka.common.replica.RackAwareReplicaSelector",
            # a partition's leader goes home within seconds of its broker's return, not 5 minutes
            "auto.leader.rebalance.enable": "true",
            "leader.imbalance.check.interval.seconds": 10,
            "leader.imbalance.per.broker.percentage": 0,
            # a follower cut off leaves the in-sync set after 10 s, not 30: until then no write to
            # a partition it follows is committed (a stretch cluster's usual setting)
            "replica.lag.time.max.ms": 10_000,
            **dev.storage_properties(node_dir, len(self.brokers)),
        }
        return "".join(f"{k}={v}\n" for k, v in lines.items())

    def _hosts(self, a: RegionBroker) -> str:
        lines = ["127.0.0.1 localhost", f"127.0.0.1 {socket.gethostname()}"]
        lines += [f"{self._address(a, b)} {b.host}" for b in self.brokers]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 180.0, progress: Callable[[str], None] = print) -> None:
        """Start the proxies and one broker per region; returns once every broker answers."""
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.data_dir.mkdir(parents=True)
        self._jars = jars = dev.install_jars(progress)
        links = self._plan()
        self.proxy = Toxiproxy(dev.free_port(), self.data_dir / "toxiproxy.log")
        try:
            self.proxy.start(progress=progress)
            self.proxy.add(links)
            progress(
                f"{len(links)} proxies delay every hop between {', '.join(self.regions)} by lattice.toml's latency_ms"
            )
            cluster_id = dev.new_cluster_id()
            for b in self.brokers:
                node_dir = self._node_dir(b)
                node_dir.mkdir()
                props = node_dir / "server.properties"
                props.write_text(self._properties(b, node_dir))
                (node_dir / "hosts").write_text(self._hosts(b))
                (node_dir / "log4j.properties").write_text(dev.LOG4J.format(path=node_dir / "server.log"))
                fmt = dev._java_command(
                    jars,
                    256,
                    node_dir,
                    ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={props}"],
                )
                done = subprocess.run(fmt, capture_output=True, text=True)
                if done.returncode != 0:
                    raise DevBrokerError(f"formatting node {b.node_id} failed:\n" + (done.stdout + done.stderr)[-2000:])
                self._launch(b)
            (self.data_dir / "regions.json").write_text(
                json.dumps({"brokers": [asdict(b) for b in self.brokers], "toxiproxy_port": self.proxy.port}, indent=2)
            )
            progress(f"starting {len(self.brokers)} Kafka brokers, one per region (racks {', '.join(self.regions)})")
            self._wait_for_brokers(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _node_dir(self, b: RegionBroker) -> Path:
        return self.data_dir / f"node-{b.node_id}-{b.region}"

    def _launch(self, b: RegionBroker) -> None:
        """Start (or start again) `b`'s JVM on its formatted log directory."""
        assert self._jars is not None, "start() first"
        node_dir = self._node_dir(b)
        extra = (f"-Djdk.net.hosts.file={node_dir / 'hosts'}", "-Dsun.net.inetaddr.ttl=0")
        command = dev._java_command(
            self._jars, 384, node_dir, ["kafka.Kafka", str(node_dir / "server.properties")], extra
        )
        with open(node_dir / "server.out", "ab") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        b.pid = proc.pid
        i = self.brokers.index(b)
        if i < len(self.procs):
            self.procs[i] = proc
        else:
            self.procs.append(proc)

    def _wait_for_brokers(self, timeout_s: float) -> None:
        def alive() -> None:
            for b, p in zip(self.brokers, self.procs, strict=True):
                if p.poll() is not None:
                    raise DevBrokerError(
                        f"the broker of {b.region} exited with {p.returncode}; its log ends:\n"
                        + dev._log_tail(self._node_dir(b))
                    )

        asyncio.run(wait_for_brokers(self.settings(self.regions[0]), len(self.brokers), timeout_s, [alive]))

    def stop(self) -> None:
        """Stop the brokers (SIGKILL after 30 s) and the proxies."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        if self.proxy is not None:
            self.proxy.stop()

    # ---- faults ----------------------------------------------------------------------------

    def stop_broker(self, node_id: int, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 60.0) -> None:
        """Send broker `node_id` `sig` (SIGKILL: it dies at once; SIGTERM: it shuts down cleanly,
        SIGKILL after `timeout_s`) and reap it."""
        b = next(b for b in self.brokers if b.node_id == node_id)
        proc = self.procs[self.brokers.index(b)]
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_brokers(self, timeout_s: float = 120.0) -> list[int]:
        """Start every broker that is down again on its data, then wait once until every broker
        answers; the node ids started."""
        down = [b for b, p in zip(self.brokers, self.procs, strict=True) if p.poll() is not None]
        for b in down:
            self._launch(b)
        self._wait_for_brokers(timeout_s)
        return [b.node_id for b in down]

    def cut(self, region: str) -> list[str]:
        """Isolate `region`'s data centre (see `cut_hops`); the names of the proxies cut."""
        assert self.proxy is not None
        names = [h.name for h in cut_hops(self.hops, region)]
        self.proxy.cut(names)
        self.cut_regions.add(region)
        return names

    def heal(self, region: str) -> None:
        """Give `region` its links back (connections through them start afresh)."""
        assert self.proxy is not None
        self.proxy.heal([h.name for h in cut_hops(self.hops, region)])
        self.cut_regions.discard(region)

    # ---- looking ---------------------------------------------------------------------------

    def leaders(self, topic: str, via: str | None = None, request_timeout_ms: int = 30_000) -> dict[int, str]:
        """Partition -> the region whose broker leads it, as the metadata of `via`'s brokers says."""
        region_of = {b.node_id: b.region for b in self.brokers}
        settings = self.settings(via or self.regions[0], request_timeout_ms=request_timeout_ms)

        async def describe() -> list[Any]:
            admin = make_admin(settings)
            await start_client(admin, settings)
            try:
                return list(await admin.describe_topics([topic]))
            finally:
                await admin.close()

        described = asyncio.run(describe())
        return {p["partition"]: region_of.get(p["leader"], "-") for t in described for p in t["partitions"]}
