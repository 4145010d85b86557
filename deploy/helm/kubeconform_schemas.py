"""JSON schemas for kubeconform, made offline from Go modules: Kubernetes' OpenAPI v3 and KEDA's CRDs.

kubeconform downloads its Kubernetes schemas from GitHub; here only package registries are
reachable, so both sources come from the Go module proxy (`go mod download`), pinned in
tools.env beside this file, and are converted the way kubeconform's own
scripts/openapi2jsonschema.py converts CRDs:

- every object with `properties` gets `additionalProperties: false` (what `-strict` means),
  the root too, except where Kubernetes keeps unknown fields;
- `x-kubernetes-int-or-string` becomes `oneOf: [string, integer]`; `format`s are dropped.

Kubernetes kinds are written as kubeconform's default layout names them,
`{kind}-{group}-{version}.json` (`deployment-apps-v1.json`, `service-v1.json`), each standalone
(the definitions it refers to inside it); CRD kinds as `{kind}_{version}.json`
(`scaledobject_v1alpha1.json`). `python deploy/helm/kubeconform_schemas.py` makes whatever is
missing in the tools directory and prints where everything is, as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
PINS = HERE / "tools.env"
REF_PREFIX = "#/components/schemas/"


def pins() -> dict[str, str]:
    """The pinned versions of tools.env (KEY=VALUE lines; # comments)."""
    out = {}
    for line in PINS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def tools_dir() -> Path:
    """Where the tools and schemas live: $STREAMLATTICE_TOOLS, else the user's cache (never the checkout)."""
    if env := os.environ.get("STREAMLATTICE_TOOLS"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamlattice" / "tools"


def locations() -> dict[str, Path]:
    """Every tool and schema folder, by name, whether it is there yet or not (./dev uses the same names)."""
    v, root = pins(), tools_dir()
    return {
        "helm": root / f"helm-{v['HELM_VERSION']}" / "helm",
        "kubeconform": root / f"kubeconform-{v['KUBECONFORM_VERSION']}" / "kubeconform",
        "kubernetes_schemas": root / "schemas" / f"kubernetes-{v['KUBERNETES_VERSION']}",
        "keda_schemas": root / "schemas" / f"keda-{v['KEDA_VERSION']}",
    }


def module_dir(module: str, version: str) -> Path:
    """The extracted source of a Go module, downloaded through the module proxy if needed."""
    go = shutil.which("go")
    if go is None:
        raise SystemExit("go is missing: the chart's tools and schemas come from the Go module proxy")
    found = subprocess.run(
        [go, "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    info = json.loads(found.stdout or "{}")
    if found.returncode != 0 or "Dir" not in info:
        raise SystemExit(f"go mod download {module}@{version} failed: {info.get('Error') or found.stderr.strip()}")
    return Path(info["Dir"])


SCHEMA_MAPS = ("properties", "patternProperties", "definitions")  # their keys are names, not keywords
KEPT_AS_IS = ("enum", "default", "example", "required")
DROPPED = ("format", "description")  # kubeconform needs neither; descriptions are most of the bytes


def strict(node: Any) -> Any:
    """A copy of a schema in kubeconform's strict form (see the module docstring)."""
    if isinstance(node, list):
        return [strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict(schema) for name, schema in value.items()}
        elif key in KEPT_AS_IS or key.startswith("x-kubernetes-"):
            out[key] = value
        elif key == "$ref" and isinstance(value, str) and value.startswith(REF_PREFIX):
            out[key] = "#/definitions/" + value[len(REF_PREFIX) :]
        else:
            out[key] = strict(value)
    if (
        isinstance(node.get("properties"), dict)
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_schemas(crd: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, schema) for every served version of a CustomResourceDefinition."""
    kind = crd["spec"]["names"]["kind"]
    for version in crd["spec"].get("versions", []):
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is not None:
            yield f"{kind}_{version['name']}".lower() + ".json", strict(schema)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            yield ref[len(REF_PREFIX) :]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def kind_file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's default name for a kind's schema: {kind}{-group's first label}-{version}.json."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}".lower() + ".json"


def kubernetes_schemas(spec: dict[str, Any], group: str, version: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, standalone schema) for every kind of group/version in its OpenAPI v3 document."""
    schemas: dict[str, Any] = spec.get("components", {}).get("schemas", {})
    for schema in schemas.values():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            # meta kinds (DeleteOptions, WatchEvent) name every group-version in every document
            if (gvk.get("group", ""), gvk["version"]) != (group, version):
                continue
            needed, todo = set(), list(_refs(schema))
            while todo:
                ref = todo.pop()
                if ref not in needed and ref in schemas:
                    needed.add(ref)
                    todo.extend(_refs(schemas[ref]))
            standalone = strict(schema)
            standalone["definitions"] = {ref: strict(schemas[ref]) for ref in sorted(needed)}
            yield kind_file_name(gvk["kind"], group, version), standalone


def group_version(spec_file: Path) -> tuple[str, str]:
    """The group and version an OpenAPI v3 document of Kubernetes describes, from its name:
    api__v1_openapi.json is the core group's v1, apis__apps__v1_openapi.json apps/v1."""
    parts = spec_file.name.removesuffix("_openapi.json").split("__")
    return ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])


def _write_all(target: Path, files: Iterator[tuple[str, dict[str, Any]]]) -> int:
    """Write the schemas into `target` whole or not at all (a half-written folder would pass for done)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    count = 0
    try:
        for name, schema in files:
            (staging / name).write_text(json.dumps(schema, separators=(",", ":")))
            count += 1
        if count == 0:
            raise SystemExit(f"no schemas found for {target.name}")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


def make_kubernetes(target: Path, version: str) -> int:
    """Kubernetes' built-in kinds from k8s.io/kubernetes' api/openapi-spec/v3."""
    spec_dir = module_dir("k8s.io/kubernetes", version) / "api" / "openapi-spec" / "v3"

    def files() -> Iterator[tuple[str, dict[str, Any]]]:
        for path in sorted(spec_dir.glob("api*__v*_openapi.json")):  # one per group-version
            yield from kubernetes_schemas(json.loads(path.read_text()), *group_version(path))

    return _write_all(target, files())


def make_keda(target: Path, version: str) -> int:
    """KEDA's kinds (ScaledObject, TriggerAuthentication, ...) from its CRDs."""
    crd_dir = module_dir("github.com/kedacore/keda/v2", version) / "config" / "crd" / "bases"

    def files() -> Iterator[tuple[str, dict[str, Any]]]:
        for path in sorted(crd_dir.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    yield from crd_schemas(doc)

    return _write_all(target, files())


def main() -> None:
    """Make the schema folders that are missing; print every location as JSON."""
    v, where = pins(), locations()
    if not where["kubernetes_schemas"].is_dir():
        n = make_kubernetes(where["kubernetes_schemas"], v["KUBERNETES_VERSION"])
        print(f"wrote {n} Kubernetes {v['KUBERNETES_VERSION']} schemas", file=sys.stderr)
    if not where["keda_schemas"].is_dir():
        n = make_keda(where["keda_schemas"], v["KEDA_VERSION"])
        print(f"wrote {n} KEDA {v['KEDA_VERSION']} schemas", file=sys.stderr)
    print(json.dumps({k: str(p) for k, p in where.items()}, indent=2))


if __name__ == "__main__":
    main()
