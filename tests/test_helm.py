"""The Helm chart (deploy/helm/streamlattice), checked offline: helm lint, helm template, and
kubeconform -strict against the Kubernetes and KEDA schemas; its KEDA formula run by expr-lang as
KEDA runs it.

helm, kubeconform, the schemas and expr-lang come from the Go module proxy; `./dev test` installs
them into the user's cache (deploy/helm/tools.env pins them, deploy/helm/kubeconform_schemas.py
converts the schemas).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deployment import exported_metric_names, parse_cli

from streamlattice.config import load_lattice

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "helm" / "streamlattice"
SECURE = CHART / "ci" / "secure-values.yaml"
LATTICE = load_lattice(REPO / "lattice.toml")
INSTALL = "`./dev test` installs it (deploy/helm/tools.env pins it)"


def _schemas_module() -> Any:
    spec = importlib.util.spec_from_file_location("kubeconform_schemas", REPO / "deploy/helm/kubeconform_schemas.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCHEMAS = _schemas_module()


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    where: dict[str, Path] = SCHEMAS.locations()
    for name in ("helm", "kubeconform"):
        assert where[name].is_file(), f"{name} is missing at {where[name]}: {INSTALL}"
    for name in ("kubernetes_schemas", "keda_schemas"):
        assert where[name].is_dir(), f"{name} are missing at {where[name]}: {INSTALL}"
    return where


def helm(tools: dict[str, Path], *args: str) -> str:
    done = subprocess.run([str(tools["helm"]), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def render(tools: dict[str, Path], *args: str) -> tuple[str, list[dict[str, Any]]]:
    text = helm(tools, "template", "lat", str(CHART), *args)
    return text, [doc for doc in yaml.safe_load_all(text) if doc]


def secure_args() -> tuple[str, ...]:
    return ("-f", str(SECURE), "--set-file", f"lattice.config={REPO / 'lattice.toml'}")


def kubeconform(tools: dict[str, Path], manifests: str, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "manifests.yaml"
    path.write_text(manifests)
    done = subprocess.run(
        [
            str(tools["kubeconform"]),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-schema-location",
            f"{tools['kubernetes_schemas']}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            "-schema-location",
            f"{tools['keda_schemas']}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    report["returncode"] = done.returncode
    return report


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workers(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Worker Deployments by (task, region), as their command lines say."""
    out = {}
    for d in of_kind(docs, "Deployment").values():
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[0] == "worker":
            out[(args[args.index("--task") + 1], args[args.index("--region") + 1])] = d
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_the_chart_lints_clean_with_default_and_secure_values(tools: dict[str, Path]) -> None:
    out = helm(tools, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out
    out = helm(tools, "lint", "--strict", str(CHART), *secure_args())
    assert "0 chart(s) failed" in out


def test_default_values_render_a_router_and_a_worker_per_task_and_region(tools: dict[str, Path]) -> None:
    _, docs = render(tools)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    wanted = {(g["task"], r) for g in values["workers"]["groups"] for r in g["regions"]}
    found = workers(docs)
    assert set(found) == wanted
    assert {task for task, _ in found} <= set(LATTICE.tasks)  # the tasks lattice.toml declares
    deployments = of_kind(docs, "Deployment")
    assert len(deployments) == len(wanted) + 1  # and the router
    for d in deployments.values():
        pod = d["spec"]["template"]
        container = pod["spec"]["containers"][0]
        ctx = parse_cli(container["args"])  # the real CLI accepts every command line
        port = int(ctx.params["metrics_port"])
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        assert {"name": "metrics", "containerPort": port} in container["ports"]
        assert env_of(container)["STREAMLATTICE_BOOTSTRAP"]["value"] == "kafka:9092"
    router = deployments["lat-streamlattice-router"]
    assert parse_cli(router["spec"]["template"]["spec"]["containers"][0]["args"]).params["web_host"] == "0.0.0.0"
    assert "lat-streamlattice-router" in of_kind(docs, "Service")
    assert not of_kind(docs, "ConfigMap")  # without lattice.config: the image's own lattice.toml


def test_a_scaled_object_per_worker_follows_its_regions_lag_the_router_and_the_grid(tools: dict[str, Path]) -> None:
    _, docs = render(tools)
    scaled = of_kind(docs, "ScaledObject")
    found = workers(docs)
    assert len(scaled) == len(found)
    for (task, region), deployment in found.items():
        so = scaled[deployment["metadata"]["name"]]["spec"]
        assert so["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        assert "replicas" not in deployment["spec"]  # KEDA's HPA owns it; an upgrade must not reset it
        block = LATTICE.region(region).block
        assert so["maxReplicaCount"] == len(block)  # more workers than partitions would idle
        lag, recommended, carbon = so["triggers"]
        assert (lag["type"], lag["name"]) == ("kafka", "lag")
        assert lag["metadata"]["consumerGroup"] == LATTICE.group_id(task)
        assert lag["metadata"]["topic"] == LATTICE.events_topic(task)
        # the chart's regions are lattice.toml's, in its order: the region's block is its lag
        assert lag["metadata"]["partitionLimitation"] == f"{block.start}-{block.stop - 1}"
        assert "authenticationRef" not in lag  # PLAINTEXT
        assert (recommended["type"], recommended["name"]) == ("prometheus", "recommended")
        assert recommended["metadata"]["query"] == (
            f'max(streamlattice_router_recommended_replicas{{task="{task}",region="{region}"}})'
        )
        assert (carbon["type"], carbon["name"]) == ("prometheus", "carbon")
        assert carbon["metadata"]["query"] == f'avg(streamlattice_carbon_intensity_g_per_kwh{{region="{region}"}})'
        modifiers = so["advanced"]["scalingModifiers"]
        assert modifiers["formula"] == "min(max(ceil(lag / 1000), recommended), carbon > 400 && lag < 50000 ? 1 : 4)"
        assert (modifiers["target"], modifiers["metricType"]) == ("1", "AverageValue")


def test_metric_names_in_the_triggers_are_ones_the_code_exports(tools: dict[str, Path]) -> None:
    text, _ = render(tools)
    queried = set(re.findall(r"streamlattice_\w+", "\n".join(line for line in text.splitlines() if "query:" in line)))
    assert queried == {"streamlattice_router_recommended_replicas", "streamlattice_carbon_intensity_g_per_kwh"}
    assert queried <= exported_metric_names()


def test_sasl_and_tls_come_from_existing_secrets_two_tasks_in_three_regions(tools: dict[str, Path]) -> None:
    text, docs = render(tools, *secure_args())
    found = workers(docs)
    assert set(found) == {(t, r) for t in ("sensor", "vision") for r in ("eu-west", "us-east", "ap-south")}
    assert not of_kind(docs, "Secret")  # the chart makes no Secret: it only refers to existing ones
    principals = {}
    for d in [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]:
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = env_of(container)
        assert env["STREAMLATTICE_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["STREAMLATTICE_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        password = env["STREAMLATTICE_SASL_PASSWORD"]
        assert "value" not in password
        principals[env["STREAMLATTICE_SASL_USERNAME"]["value"]] = password["valueFrom"]["secretKeyRef"]
        # the CA file is the Secret's, mounted; lattice.toml is the chart's, over the image's own
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert env["STREAMLATTICE_SSL_CAFILE"]["value"].startswith(mounts["kafka-ca"]["mountPath"] + "/")
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "lattice-kafka-ca"
        assert env["STREAMLATTICE_CONFIG"]["value"] == mounts["lattice"]["mountPath"] == "/app/lattice.toml"
        assert volumes["lattice"]["configMap"]["name"] in of_kind(docs, "ConfigMap")
    assert principals == {  # least privilege: a principal per component, as `broker start --secure` makes them
        "worker": {"name": "lattice-worker", "key": "password"},
        "router": {"name": "lattice-router", "key": "password"},
        "admin": {"name": "lattice-admin", "key": "password"},
    }
    for config in of_kind(docs, "ConfigMap").values():
        assert config["data"]["lattice.toml"].strip() == (REPO / "lattice.toml").read_text().strip()
    job = next(iter(of_kind(docs, "Job").values()))
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert parse_cli(job["spec"]["template"]["spec"]["containers"][0]["args"]).command.name == "init"

    auth = of_kind(docs, "TriggerAuthentication")["lat-streamlattice-kafka"]["spec"]
    assert {s["parameter"]: (s["name"], s["key"]) for s in auth["secretTargetRef"]} == {
        "password": ("lattice-worker", "password"),
        "ca": ("lattice-kafka-ca", "ca.crt"),
    }
    assert auth["env"] == [{"parameter": "username", "name": "STREAMLATTICE_SASL_USERNAME", "containerName": "worker"}]
    for so in of_kind(docs, "ScaledObject").values():
        lag = so["spec"]["triggers"][0]
        assert lag["authenticationRef"] == {"name": "lat-streamlattice-kafka"}
        assert (lag["metadata"]["sasl"], lag["metadata"]["tls"]) == ("scram_sha512", "enable")
        assert all('namespace="lattice"' in t["metadata"]["query"] for t in so["spec"]["triggers"][1:])
        assert so["spec"]["maxReplicaCount"] == 3
        assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}
    for (_, region), d in found.items():
        assert d["spec"]["template"]["spec"]["nodeSelector"] == {"topology.kubernetes.io/region": region}
    assert "secretpassword" not in text.lower()


@pytest.mark.parametrize("which", ["default", "secure"])
def test_kubeconform_strict_passes_against_the_kubernetes_and_keda_schemas(
    tools: dict[str, Path], tmp_path: Path, which: str
) -> None:
    text, docs = render(tools, *(secure_args() if which == "secure" else ()))
    report = kubeconform(tools, text, tmp_path)
    summary = report["summary"]
    assert report["returncode"] == 0 and summary["invalid"] == 0 and summary["errors"] == 0, report
    assert summary["skipped"] == 0 and summary["valid"] == len(docs), report  # every object had its schema
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "ScaledObject", "Job"} <= kinds
    assert which == "default" or {"ConfigMap", "TriggerAuthentication"} <= kinds


def test_kubeconform_catches_a_broken_scaled_object(tools: dict[str, Path], tmp_path: Path) -> None:
    _, docs = render(tools)
    good = next(iter(of_kind(docs, "ScaledObject").values()))

    def broken(change: Callable[[dict[str, Any]], object]) -> str:
        so = json.loads(json.dumps(good))
        change(so["spec"])
        return yaml.safe_dump(so)

    cases = {
        "a number where KEDA wants a string": broken(lambda s: s["triggers"][0]["metadata"].update(lagThreshold=1)),
        "a misspelt field": broken(
            lambda s: s["advanced"].update(scalingModifier=s["advanced"].pop("scalingModifiers"))
        ),
        "no scale target": broken(lambda s: s.pop("scaleTargetRef")),
        "a metric type KEDA does not take": broken(lambda s: s["advanced"]["scalingModifiers"].update(metricType="x")),
    }
    assert kubeconform(tools, yaml.safe_dump(good), tmp_path)["returncode"] == 0  # unbroken, it passes
    for why, manifest in cases.items():
        report = kubeconform(tools, manifest, tmp_path)
        assert report["returncode"] != 0 and report["summary"]["invalid"] == 1, (why, report)


def run_formula(formula: str, cases: list[dict[str, float]]) -> list[float]:
    go = shutil.which("go")
    assert go, "go is missing: the chart's KEDA formula is checked with expr-lang, from the Go module proxy"
    done = subprocess.run(
        [go, "run", "."],
        input=json.dumps({"formula": formula, "triggers": ["lag", "recommended", "carbon"], "cases": cases}),
        capture_output=True,
        text=True,
        cwd=REPO / "deploy" / "helm" / "formula",
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results: list[float] = json.loads(done.stdout)["results"]
    return results


def test_keda_compiles_the_formula_and_it_scales_as_the_readme_says(tools: dict[str, Path]) -> None:
    _, docs = render(tools)
    formula = next(iter(of_kind(docs, "ScaledObject").values()))["spec"]["advanced"]["scalingModifiers"]["formula"]
    # lag threshold 1000, a clean grid up to 400 gCO2/kWh, capped at 1 while dirty below 50,000 of lag, at most 4
    cases = [
        ({"lag": 0, "recommended": 0, "carbon": 0}, 0),  # nothing to do (the floor is minReplicaCount's)
        ({"lag": 2500, "recommended": 1, "carbon": 250}, 3),  # the lag wants 3
        ({"lag": 200, "recommended": 2, "carbon": 250}, 2),  # the router sees the arrival rate first
        ({"lag": 9000, "recommended": 1, "carbon": 250}, 4),  # never above the ceiling
        ({"lag": 2500, "recommended": 3, "carbon": 620}, 1),  # a dirty grid: the work waits
        ({"lag": 60000, "recommended": 3, "carbon": 620}, 4),  # until the backlog is too long
        ({"lag": 2500, "recommended": 3, "carbon": 0}, 3),  # no power reported: no cap
    ]
    assert run_formula(formula, [c for c, _ in cases]) == [want for _, want in cases]
    # with the carbon cap off, the formula must not name the carbon trigger
    _, plain = render(tools, "--set", "autoscaling.carbon.enabled=false")
    so = next(iter(of_kind(plain, "ScaledObject").values()))["spec"]
    assert so["advanced"]["scalingModifiers"]["formula"] == "max(ceil(lag / 1000), recommended)"
    assert [t["name"] for t in so["triggers"]] == ["lag", "recommended"]


def test_the_formula_language_is_the_one_the_pinned_keda_uses() -> None:
    keda = SCHEMAS.module_dir("github.com/kedacore/keda/v2", SCHEMAS.pins()["KEDA_VERSION"])
    wanted = next(line.split()[1] for line in (keda / "go.mod").read_text().splitlines() if "expr-lang/expr " in line)
    ours = (REPO / "deploy" / "helm" / "formula" / "go.mod").read_text()
    assert f"github.com/expr-lang/expr {wanted}" in ours


REGIONS = [{"name": r.name, "partitions": r.partitions} for r in LATTICE.regions]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kafka": {"security": {"protocol": "SASL_SSL"}}}, "needs a SASL username and passwordSecret"),
        ({"kafka": {"security": {"protocol": "TLS"}}}, "use PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
        ({"workers": {"groups": [{"task": "sensor", "regions": ["mars"]}]}}, 'region "mars" is not in lattice.regions'),
        ({"lattice": {"regions": [*REGIONS[:1], {"name": "us-east", "partitions": 8}, *REGIONS[2:]]}}, "differ"),
        ({"lattice": {"regions": [{"name": "eu-west"}]}}, "every region needs a name and partitions"),
    ],
)
def test_settings_that_cannot_work_fail_the_render_with_what_to_change(
    tools: dict[str, Path], tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [str(tools["helm"]), "template", "lat", str(CHART), "-f", str(tmp_path / "values.yaml"), *secure_args()[2:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and message in done.stderr, done.stderr
