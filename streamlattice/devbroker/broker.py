"""The dev broker: real Apache Kafka in KRaft mode, from jars Maven resolves once, no Docker.

A cluster lives in one data dir: `cluster.json` (ports, process ids, cluster id) and one
folder per node (its properties, KRaft log dirs and server log). Starting again on the same
data dir keeps the data; stopping sends SIGTERM, which Kafka answers with a clean shutdown.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from streamlattice import paths
from streamlattice.devbroker.tls import BROKER_CN, make_certificates
from streamlattice.errors import DevBrokerError
from streamlattice.kafka.clients import KafkaSettings, create_acls, wait_for_brokers
from streamlattice.kafka.security import PRINCIPALS, Security, lattice_acls, read_file, write_file

KAFKA_VERSION = "3.9.2"
POM = Path(__file__).with_name("pom.xml")
DEFAULT_PORT = 9092
STATE_FILE = "cluster.json"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


def default_data_dir() -> Path:
    """The dev broker's data dir: `broker` in streamlattice.paths.data_dir()."""
    return paths.data_dir() / "broker"


def require_tool(name: str, what: str) -> str:
    """The path of `name` on PATH, or a DevBrokerError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise DevBrokerError(f"`{name}` not found on PATH: {what}")
    return path


def install_jars(progress: Callable[[str], None] = print) -> Path:
    """The folder of Kafka's jars, resolved from Maven Central on first use."""
    target = paths.cache_dir() / f"kafka-{KAFKA_VERSION}"
    marker = target / ".complete"
    if marker.exists():
        return target
    require_tool("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    mvn = require_tool("mvn", "install Maven (e.g. `apt-get install maven`) to resolve Kafka's jars")
    progress(f"resolving Apache Kafka {KAFKA_VERSION} jars with Maven into {target} (once)...")
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-Dkafka.version={KAFKA_VERSION}",
        f"-DoutputDirectory={target}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise DevBrokerError("Maven could not resolve Kafka's jars:\n" + "\n".join(tail))
    marker.write_text(KAFKA_VERSION)
    progress(f"Kafka jars ready ({len(list(target.glob('*.jar')))} jars)")
    return target


@dataclass
class Node:
    """One KRaft node (broker and controller in one JVM)."""

    node_id: int
    port: int
    controller_port: int
    pid: int | None = None
    internal_port: int | None = None  # secure clusters: the brokers' own mTLS listener


@dataclass
class ClusterState:
    """What `cluster.json` remembers about a dev cluster."""

    cluster_id: str
    nodes: list[Node]
    secure: bool = False  # TLS + SASL/SCRAM-SHA-512 + ACLs (see secure_properties)

    @property
    def bootstrap(self) -> str:
        """The bootstrap address of every node."""
        return ",".join(f"localhost:{n.port}" for n in self.nodes)

    def save(self, data_dir: Path) -> None:
        """Write the state beside the nodes' folders."""
        (data_dir / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, data_dir: Path) -> ClusterState | None:
        """The saved state, or None for a data dir that never held a cluster."""
        path = data_dir / STATE_FILE
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        return cls(raw["cluster_id"], [Node(**n) for n in raw["nodes"]], raw.get("secure", False))


def port_is_free(port: int) -> bool:
    """Whether nothing listens on `port` on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as Kafka binds: connections of a node that just died (TIME_WAIT) do not hold the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports handed out by this process and not yet bound by whoever asked: never handed out twice.
_handed_out: set[int] = set()


def _listen_range() -> tuple[int, int]:
    """Where free ports are drawn from: below the OS's ephemeral range.

    A port taken from the ephemeral range (what binding to port 0 returns) is free only until the
    next outgoing connection on this machine picks it as its local port; Kafka's own nodes, and
    every client of a parallel test, connect out while a cluster starts, and a node that then
    binds it fails with "Address already in use". Ports below the range are never chosen by
    connect(), so a port found free there stays free until someone binds it on purpose.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low) if low > 12000 else (low + 28000, 65535)


def free_port() -> int:
    """A port that is free now and that no outgoing connection will take (see `_listen_range`)."""
    return free_port_block(1)


def free_port_block(n: int, attempts: int = 200) -> int:
    """A port p with p, p+1, ..., p+n-1 all free (see `free_port`): a multi-node cluster's client ports."""
    low, high = _listen_range()
    rng = random.SystemRandom()  # parallel test processes must not draw the same sequence
    for _ in range(attempts):
        base = rng.randrange(low, high - n)
        block = range(base, base + n)
        if not _handed_out.intersection(block) and all(port_is_free(p) for p in block):
            _handed_out.update(block)
            return base
    raise DevBrokerError(f"no {n} consecutive free ports found in {low}-{high}; pass --port")


def is_our_process(pid: int | None, data_dir: Path) -> bool:
    """Whether `pid` is alive and is a Kafka JVM of this data dir (not a recycled pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and str(data_dir) in cmdline


def storage_properties(node_dir: Path, n: int) -> dict[str, object]:
    """What every dev node of an `n`-node cluster shares, whatever its listeners: log dirs,
    replication, the lattice's topic defaults and small thread pools."""
    replication = min(n, 3)
    min_isr = 2 if n >= 3 else 1
    return {
        "log.dirs": node_dir / "logs",
        "num.partitions": 1,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.replication.factor": replication,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        # Topics come from `streamlattice topics init`; a typo must not create one.
        "auto.create.topics.enable": "false",
        # A dev cluster: a new group's first member should not wait 3 s for company.
        "group.initial.rebalance.delay.ms": 0,
        "offsets.topic.num.partitions": 12,
        "log.segment.bytes": 64 * 1024 * 1024,
        "log.retention.hours": 24,
        # Deleted topics' files go after 1 s, not 60: tests and the bench delete and create
        # namespaces all the time, and once a broker's controller stalled from the re-create
        # until the deleted logs were removed, 61 s later (bench/worker-split-ab.md).
        "log.segment.delete.delay.ms": 1000,
        "num.network.threads": 2,
        "num.io.threads": 4,
    }


def _properties(node: Node, state: ClusterState, node_dir: Path) -> str:
    n = len(state.nodes)
    voters = ",".join(f"{x.node_id}@localhost:{x.controller_port}" for x in state.nodes)
    lines = {
        "process.roles": "broker,controller",
        "node.id": node.node_id,
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://localhost:{node.port},CONTROLLER://localhost:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://localhost:{node.port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        **storage_properties(node_dir, n),
    }
    if state.secure:
        lines.update(secure_properties(node, node_dir.parent))
    return "".join(f"{k}={v}\n" for k, v in lines.items())


def secure_properties(node: Node, data_dir: Path) -> dict[str, object]:
    """Clients on SASL_SSL with SCRAM-SHA-512; brokers and controllers on mutual TLS; ACLs enforced."""
    tls = data_dir / "tls"
    return {
        "listeners": f"SASL_SSL://localhost:{node.port},INTERNAL://localhost:{node.internal_port},"
        f"CONTROLLER://localhost:{node.controller_port}",
        "advertised.listeners": f"SASL_SSL://localhost:{node.port},INTERNAL://localhost:{node.internal_port}",
        "listener.security.protocol.map": "CONTROLLER:SSL,INTERNAL:SSL,SASL_SSL:SASL_SSL",
        "inter.broker.listener.name": "INTERNAL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        # the server side of SCRAM needs no secret of its own: users live in the cluster metadata
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": f"{SCRAM_LOGIN} required;",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": tls / "broker.pem",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": tls / "ca.pem",
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:CN={BROKER_CN};User:admin",
        "allow.everyone.if.no.acl.found": "false",
    }


def client_file(data_dir: Path, principal: str) -> Path:
    """The [security] file of one principal of a secure dev cluster."""
    return data_dir.resolve() / "clients" / f"{principal}.toml"


def client_security(data_dir: Path, principal: str) -> Security:
    """The security settings of one principal of a secure dev cluster."""
    path = client_file(data_dir, principal)
    if not path.exists():
        raise DevBrokerError(f"no credentials for {principal!r} in {path.parent}: is {data_dir} a --secure cluster?")
    return Security(**read_file(path))


def _make_principals(data_dir: Path) -> list[str]:
    """Certificates and one user per principal (passwords in owner-only files); the --add-scram args."""
    ca, _ = make_certificates(data_dir / "tls")
    args = []
    for principal in PRINCIPALS:
        path = client_file(data_dir, principal)
        if path.exists():
            password = read_file(path)["password"]
        else:
            password = secrets.token_urlsafe(24)
            write_file(path, Security("SASL_SSL", "SCRAM-SHA-512", principal, password, str(ca)))
        args.append(f"--add-scram=SCRAM-SHA-512=[name={principal},password={password}]")
    return args


LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={path}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's Uuid.randomUuid makes one: URL-safe base64 of 16 random bytes,
    unpadded, and never starting with "-" (a command line would take it for an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java_command(jars: Path, heap_mb: int, node_dir: Path, main: list[str], extra: tuple[str, ...] = ()) -> list[str]:
    java = require_tool("java", "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)")
    return [
        java,
        *extra,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 256)}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{node_dir / 'log4j.properties'}",
        f"-Dkafka.logs.dir={node_dir}",
        "-cp",
        f"{jars}/*",
        *main,
    ]


def _log_tail(node_dir: Path, lines: int = 20) -> str:
    """The last lines of a node's log, after its first ERROR lines: a node that fails to start logs
    the reason once and then pages of shutdown, so the tail alone hides why it stopped."""
    for name in ("server.out", "server.log"):
        path = node_dir / name
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace").splitlines()
            errors = [line for line in text if " ERROR " in line or " FATAL " in line][:5]
            tail = text[-lines:]
            head = [line for line in errors if line not in tail]
            return "\n".join([*head, "[...]", *tail] if head else tail)
    return "(no log written)"


def start(
    data_dir: Path,
    port: int | None = None,
    nodes: int = 1,
    heap_mb: int | None = None,
    timeout_s: float = 120.0,
    progress: Callable[[str], None] = print,
    secure: bool = False,
    namespace: str | None = None,
) -> ClusterState:
    """Start (or find running) the dev cluster of `data_dir`; returns once every broker answers.

    `secure` (on first start; a cluster stays what it was made) turns on TLS, SASL/SCRAM-SHA-512
    and ACLs, with a user per principal whose credentials land in `data_dir/clients/`; the
    ACLs of lattice `namespace` are granted (grant others with `grant_lattice`).
    """
    if nodes not in (1, 3):
        raise DevBrokerError(f"--nodes must be 1 or 3, got {nodes}")
    data_dir = data_dir.resolve()
    state = ClusterState.load(data_dir)
    if state and all(is_our_process(n.pid, data_dir) for n in state.nodes):
        progress(f"broker already running at {state.bootstrap} (data dir {data_dir})")
        return state
    if state and secure and not state.secure:
        raise DevBrokerError(f"{data_dir} holds a cluster without security; use another --data-dir for --secure")
    if state and len(state.nodes) != nodes:
        raise DevBrokerError(
            f"{data_dir} holds a {len(state.nodes)}-node cluster; start it with --nodes "
            f"{len(state.nodes)} or use another --data-dir"
        )
    jars = install_jars(progress)
    if state and port is not None and any(is_our_process(n.pid, data_dir) for n in state.nodes):
        raise DevBrokerError(f"part of the cluster in {data_dir} runs on other ports; stop it first to move it")
    if state is None or port is not None:
        base = port or DEFAULT_PORT
        old = {n.node_id: n for n in state.nodes} if state else {}
        state = ClusterState(
            state.cluster_id if state else new_cluster_id(),
            [Node(i + 1, base + i, old[i + 1].controller_port if i + 1 in old else free_port()) for i in range(nodes)],
            state.secure if state else secure,
        )
    if state.secure:
        for n in state.nodes:
            n.internal_port = n.internal_port or free_port()
    # A node that died is started again beside the running ones, which keep serving.
    down = [n for n in state.nodes if not is_our_process(n.pid, data_dir)]
    for n in down:
        for p, what in ((n.port, "broker"), (n.controller_port, "controller"), (n.internal_port, "internal")):
            if p is None:
                continue
            if not port_is_free(p):
                raise DevBrokerError(
                    f"port {p} ({what} of node {n.node_id}) is taken: another broker may be running "
                    "(`streamlattice broker status`), or choose another --port"
                )
    heap = heap_mb or (512 if nodes == 1 else 384)
    data_dir.mkdir(parents=True, exist_ok=True)
    scram = _make_principals(data_dir) if state.secure else []
    procs: list[tuple[Node, subprocess.Popen[bytes], Path]] = []
    for n in down:
        node_dir = data_dir / f"node-{n.node_id}"
        node_dir.mkdir(exist_ok=True)
        props = node_dir / "server.properties"
        props.write_text(_properties(n, state, node_dir))
        (node_dir / "log4j.properties").write_text(LOG4J.format(path=node_dir / "server.log"))
        if not (node_dir / "logs" / "meta.properties").exists():
            fmt = _java_command(
                jars,
                256,
                node_dir,
                ["kafka.tools.StorageTool", "format", f"--cluster-id={state.cluster_id}", f"--config={props}", *scram],
            )
            done = subprocess.run(fmt, capture_output=True, text=True)
            if done.returncode != 0:
                raise DevBrokerError(
                    f"formatting KRaft storage of node {n.node_id} failed:\n" + (done.stdout + done.stderr)[-2000:]
                )
        with open(node_dir / "server.out", "wb") as out:
            proc = subprocess.Popen(
                _java_command(jars, heap, node_dir, ["kafka.Kafka", str(props)]),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        n.pid = proc.pid
        procs.append((n, proc, node_dir))
    state.save(data_dir)
    progress(f"starting {len(down)} of {nodes} Kafka {KAFKA_VERSION} node(s) in {data_dir} ...")

    def check(node: Node, proc: subprocess.Popen[bytes], node_dir: Path) -> Callable[[], None]:
        def alive() -> None:
            if proc.poll() is not None:
                raise DevBrokerError(
                    f"Kafka node {node.node_id} exited with code {proc.returncode}; its log ends:\n"
                    + _log_tail(node_dir)
                )

        return alive

    try:
        asyncio.run(wait_for_brokers(admin_settings(data_dir, state), nodes, timeout_s, [check(*p) for p in procs]))
        if state.secure and namespace:
            grant_lattice(data_dir, namespace)
    except BaseException:
        if len(down) == len(state.nodes):
            stop(data_dir, progress=lambda _: None)
        else:  # leave the nodes that were running alone
            for _, proc, _ in procs:
                proc.kill()
                proc.wait()
        raise
    progress(f"broker ready at {state.bootstrap}")
    return state


def admin_settings(data_dir: Path, state: ClusterState) -> KafkaSettings:
    """Settings of a super user of the cluster (the admin principal of a secure one)."""
    security = client_security(data_dir, "admin") if state.secure else Security()
    return KafkaSettings(bootstrap=state.bootstrap, client_id="streamlattice-broker", security=security)


def grant_lattice(data_dir: Path, namespace: str) -> None:
    """Grant each principal of a secure dev cluster its rights in lattice `namespace`."""
    state = ClusterState.load(data_dir.resolve())
    if state is None or not state.secure:
        raise DevBrokerError(f"{data_dir} holds no secure cluster")
    asyncio.run(create_acls(admin_settings(data_dir.resolve(), state), lattice_acls(namespace)))


def stop(data_dir: Path, timeout_s: float = 60.0, progress: Callable[[str], None] = print) -> bool:
    """Stop every node of `data_dir`'s cluster cleanly (SIGKILL after `timeout_s`); False if none ran."""
    data_dir = data_dir.resolve()
    state = ClusterState.load(data_dir)
    if state is None:
        progress(f"no broker was ever started in {data_dir}")
        return False
    running = [n for n in state.nodes if is_our_process(n.pid, data_dir)]
    for n in running:
        assert n.pid is not None
        os.kill(n.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(is_our_process(n.pid, data_dir) for n in running) and time.monotonic() < deadline:
        time.sleep(0.2)
    for n in running:
        if is_our_process(n.pid, data_dir):
            assert n.pid is not None
            progress(f"node {n.node_id} did not stop within {timeout_s:.0f}s; killing it")
            os.kill(n.pid, signal.SIGKILL)
    for n in state.nodes:
        n.pid = None
    state.save(data_dir)
    progress(f"stopped {len(running)} node(s) of {data_dir}" if running else f"no broker running in {data_dir}")
    return bool(running)


@dataclass(frozen=True)
class NodeStatus:
    """One node as `broker status` shows it."""

    node_id: int
    port: int
    pid: int | None
    running: bool


def status(data_dir: Path) -> list[NodeStatus]:
    """Each node of `data_dir`'s cluster and whether its process runs; empty if none was started."""
    data_dir = data_dir.resolve()
    state = ClusterState.load(data_dir)
    if state is None:
        return []
    return [NodeStatus(n.node_id, n.port, n.pid, is_our_process(n.pid, data_dir)) for n in state.nodes]
