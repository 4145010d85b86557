"""docker-compose.yml, checked without a Docker engine: it parses, every command is a valid
invocation of our CLI, every scraped port is exposed, every dashboard query names real metrics."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from streamlattice.cli import cli
from streamlattice.metrics import RouterMetrics, WorkerMetrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def parse_cli(args: list[str]) -> click.Context:
    """Parse a command line with the real CLI, down to the leaf command, without running it."""
    ctx = cli.make_context("streamlattice", list(args))
    command: click.Command = cli
    while isinstance(command, click.Group):
        with warnings.catch_warnings():  # click 8.2+ deprecates protected_args; 9.0 folds it into args
            warnings.simplefilter("ignore", DeprecationWarning)
            rest = ctx.protected_args + ctx.args
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name}"
        ctx = sub.make_context(name or "", rest, parent=ctx)
        command = sub
    return ctx


def our_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("streamlattice")}


def test_every_service_of_ours_runs_a_valid_cli_invocation(compose: dict[str, Any]) -> None:
    services = our_services(compose)
    assert {"topics-init", "router", "sensor-eu-west", "vision-eu-west", "language-eu-west"} <= set(services)
    for name, service in services.items():
        ctx = parse_cli(service["command"])
        assert ctx.command.name in {"init", "router", "worker", "produce"}, name
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:3.9")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_a_bad_invocation_would_be_caught(compose: dict[str, Any]) -> None:
    with pytest.raises(click.UsageError):
        parse_cli(["worker", "--task", "sensor"])  # --region missing
    with pytest.raises(click.UsageError):
        parse_cli(["worker", "--task", "sensor", "--region", "x", "--metrics-port", "many"])


def test_prometheus_scrapes_only_ports_that_services_expose(compose: dict[str, Any]) -> None:
    prom = yaml.safe_load((REPO / "ops" / "prometheus.yml").read_text())
    targets: list[tuple[str, int]] = []
    for job in prom["scrape_configs"]:
        for static in job.get("static_configs", []):
            targets += [(t.split(":")[0], int(t.split(":")[1])) for t in static["targets"]]
        for dns in job.get("dns_sd_configs", []):
            targets += [(n, int(dns["port"])) for n in dns["names"]]
    services = our_services(compose)
    workers = {n for n, s in services.items() if s["command"][0] == "worker"}
    assert workers | {"router"} == {host for host, _ in targets}  # every worker and the router scraped
    for host, port in targets:
        service = services[host]
        command = service["command"]
        assert command[command.index("--metrics-port") + 1] == str(port), host
        assert str(port) in [str(p) for p in service.get("expose", [])], host


def exported_metric_names() -> set[str]:
    names: set[str] = set()
    for registry in (WorkerMetrics("t", "r", "n").registry, RouterMetrics().registry):
        for family in registry.collect():  # families without a labelled child yet have no samples
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
            names.update(family.name + s for s in suffixes[family.type])
    return names


def test_the_dashboard_queries_metrics_the_code_exports() -> None:
    dashboard = json.loads((REPO / "ops" / "grafana" / "dashboards" / "streamlattice.json").read_text())
    exported = exported_metric_names()
    queried = {
        m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"streamlattice_\w+", t["expr"])
    }
    assert queried, "the dashboard queries nothing"
    missing = queried - exported
    assert not missing, f"dashboard queries metrics nobody exports: {missing}"
    assert len(queried) >= 15
