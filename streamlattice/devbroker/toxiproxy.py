"""Toxiproxy: the TCP proxy that gives emulated regions their distance (and cuts their links).

netem is not to be had on these machines, so every cross-region hop of an emulated lattice goes
through a Toxiproxy proxy with a `latency` toxic each way (one-way latency, so a round trip
costs twice it) and a region is cut by blackholing its proxies (`timeout` toxics with timeout 0:
connections stay open and carry nothing, as on a real partition, rather than being refused).
Toxiproxy is built once from the Go module proxy into the cache, like the Kafka jars.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamlattice import paths
from streamlattice.errors import DevBrokerError

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.5.0"
BLACKHOLE = "cut"  # the name of the toxics that cut a proxy


def install(progress: Callable[[str], None] = print) -> Path:
    """The toxiproxy-server binary, built with `go install` from the Go module proxy on first use."""
    target = paths.cache_dir() / f"toxiproxy-{TOXIPROXY_VERSION}"
    binary = target / "toxiproxy-server"
    if binary.exists():
        return binary
    go = shutil.which("go")
    if go is None:
        raise DevBrokerError(
            "`go` not found on PATH: emulated regions build Toxiproxy from the Go module proxy "
            "(install Go 1.20+, e.g. from go.dev/dl, and put its bin folder on PATH)"
        )
    progress(f"building Toxiproxy {TOXIPROXY_VERSION} with `go install` into {target} (once)...")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [go, "install", f"{TOXIPROXY_MODULE}@{TOXIPROXY_VERSION}"],
        env={**os.environ, "GOBIN": str(target), "GOFLAGS": "-mod=mod"},
        capture_output=True,
        text=True,
    )
    built = target / "server"
    if done.returncode != 0 or not built.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        raise DevBrokerError("`go install` could not build Toxiproxy:\n" + "\n".join(tail))
    built.rename(binary)
    return binary


@dataclass(frozen=True)
class Link:
    """One proxied hop: a name, where it listens, where it forwards, and its one-way latency."""

    name: str
    listen: str  # host:port
    upstream: str  # host:port
    latency_ms: float


class Toxiproxy:
    """A toxiproxy-server process and its HTTP API (proxies, latency, cuts)."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        """The base URL of its API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0, progress: Callable[[str], None] = print) -> None:
        """Start the server and return once its API answers."""
        binary = install(progress)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), "-host", "127.0.0.1", "-port", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._call("GET", "/proxies")
                return
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None:
                    raise DevBrokerError(
                        f"toxiproxy-server exited with {self.proc.returncode}; see {self.log}"
                    ) from None
                if time.monotonic() > deadline:
                    self.stop()
                    raise DevBrokerError(
                        f"toxiproxy-server did not answer on port {self.port}; see {self.log}"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (its proxies go with it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise DevBrokerError(f"toxiproxy {method} {path}: {e.code} {e.read().decode(errors='replace')}") from None
        return json.loads(raw) if raw else None

    def add(self, links: Iterable[Link]) -> None:
        """Create the proxies, each with its latency both ways (none for 0 ms)."""
        links = list(links)
        self._call(
            "POST",
            "/populate",
            [{"name": link.name, "listen": link.listen, "upstream": link.upstream, "enabled": True} for link in links],
        )
        for link in links:
            if link.latency_ms > 0:
                for stream in ("upstream", "downstream"):
                    self._call(
                        "POST",
                        f"/proxies/{link.name}/toxics",
                        {
                            "name": f"latency_{stream}",
                            "type": "latency",
                            "stream": stream,
                            "attributes": {"latency": round(link.latency_ms), "jitter": 0},
                        },
                    )

    def cut(self, names: Iterable[str]) -> None:
        """Blackhole these proxies both ways: open connections stay open and carry nothing."""
        for name in names:
            for stream in ("upstream", "downstream"):
                self._call(
                    "POST",
                    f"/proxies/{name}/toxics",
                    {
                        "name": f"{BLACKHOLE}_{stream}",
                        "type": "timeout",
                        "stream": stream,
                        "attributes": {"timeout": 0},
                    },
                )

    def heal(self, names: Iterable[str]) -> None:
        """Undo `cut` on these proxies (their latency stays). A blackhole dropped bytes in the
        middle of the streams it held, so their connections are closed: clients connect afresh."""
        for name in names:
            for stream in ("upstream", "downstream"):
                try:
                    self._call("DELETE", f"/proxies/{name}/toxics/{BLACKHOLE}_{stream}")
                except DevBrokerError as e:
                    if " 404 " not in f" {e} ":
                        raise
            self._call("POST", f"/proxies/{name}", {"enabled": False})
            self._call("POST", f"/proxies/{name}", {"enabled": True})

    def proxies(self) -> dict[str, Any]:
        """Every proxy with its toxics, as the API lists them."""
        return dict(self._call("GET", "/proxies"))
