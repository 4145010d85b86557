"""Real Prometheus: the alert rules pass promtool, and every dashboard query returns data from a live lattice.

Prometheus comes from Debian's `prometheus` package (`./dev` installs it, as it installs Java).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.sdk.client import LatticeProducer
from workers.sensor.signals import generate

REPO = Path(__file__).resolve().parents[1]
OPS = REPO / "ops"
DASHBOARD = OPS / "grafana" / "dashboards" / "streamlattice.json"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `./dev setup` installs Debian's prometheus package"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_the_alert_rules_and_the_prometheus_configuration_pass_promtool() -> None:
    checked = promtool("check", "rules", str(OPS / "alerts.yml"))
    assert checked.returncode == 0 and "SUCCESS: 5 rules found" in checked.stdout, checked.stdout + checked.stderr
    tested = promtool("test", "rules", str(OPS / "alerts.test.yml"))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = promtool("check", "config", str(OPS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", []) if t.get("expr")]


def query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.kafka
@pytest.mark.timeout(240)
def test_every_dashboard_query_returns_data_from_a_live_router_and_worker(
    kafka: str, lattice: Lattice, workers, routers, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `./dev setup` installs Debian's prometheus package"
    worker_port, router_port, prom_port = dev.free_port(), dev.free_port(), dev.free_port()
    w = workers(lattice, "eu-west", args=("--metrics-port", str(worker_port)))
    routers(lattice, args=("--metrics-port", str(router_port)))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(OPS / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{router_port}"]}]},
                    {"job_name": "workers", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
                ],
            }
        )
    )
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=(tmp_path / "prometheus.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{prom_port}"
    try:
        w.wait_assigned()

        async def load() -> None:  # 8 s at 50 events/s: every rate gets samples (scraped each second)
            x = generate(50, seed=3).x
            async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=kafka)) as producer:
                for i in range(400):
                    await producer.submit("sensor", "eu-west", f"machine-{i % 7}", x[i % len(x)])
                    await asyncio.sleep(0.02)
                await producer.flush()

        asyncio.run(load())
        empty: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            empty = [title for title, expr in dashboard_queries() if not query(base, expr)]
            if not empty:
                break
            time.sleep(2)
        assert not empty, f"dashboard panels with no data: {empty} (see {tmp_path / 'prometheus.log'})"
        targets = json.load(urllib.request.urlopen(f"{base}/api/v1/targets", timeout=10))["data"]["activeTargets"]
        assert {t["health"] for t in targets} == {"up"}, targets
        rules = json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10))["data"]["groups"]
        assert sum(len(g["rules"]) for g in rules) == 5  # the alert rules load in a real Prometheus
    finally:
        server.terminate()
        server.wait(30)
