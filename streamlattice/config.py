"""The lattice layout, read from lattice.toml: regions, their partitions and latencies, and tasks."""

from __future__ import annotations

import functools
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamlattice.errors import ConfigError
from streamlattice.paths import DEFAULT_LATTICE, default_models_base
from streamlattice.placement.plan import Weights
from streamlattice.power.energy import PowerModel

DEFAULT_CONFIG = DEFAULT_LATTICE
DEFAULT_BOOTSTRAP = "localhost:9092"
INPUT_KINDS = ("tensor", "text")
TASK_KEYS = frozenset(
    {
        "model",
        "builder",
        "input",
        "dtype",
        "shape",
        "max_batch",
        "max_wait_ms",
        "max_event_bytes",
        "preprocess",
        "postprocess",
        "generator",
        "watts",
        "providers",
        "max_tokens",
        "labels",
    }
)


@dataclass(frozen=True)
class Region:
    """A region owns a contiguous block of every task topic's partitions."""

    name: str
    partitions: int
    first_partition: int
    carbon_intensity: float  # gCO2/kWh assumed until a power source reports a live value
    tz_hours: float = 0.0  # UTC offset, for the sun over simulated solar power
    power: str = "grid"  # the power source spec its nodes use unless told otherwise

    @property
    def block(self) -> range:
        """The partition numbers of this region's block."""
        return range(self.first_partition, self.first_partition + self.partitions)


@dataclass(frozen=True)
class Task:
    """A kind of inference: the model that serves it and the limits of its events."""

    name: str
    model: Path
    builder: str | None  # "module:function" that writes the model file
    input: str  # "tensor" or "text"
    dtype: str
    shape: tuple[int, ...]
    max_batch: int
    max_wait_ms: float
    max_event_bytes: int
    preprocess: str | None  # "module:function" turning a batch into the model's inputs
    postprocess: str | None  # "module:function" mapping model outputs to labels and scores
    generator: str | None  # "module:function" making sample payloads for the load generator
    watts: float | None  # what a busy CPU draws serving this task, if not the node's busy_watts (an accelerator)
    providers: tuple[str, ...] = ("cpu",)  # ONNX Runtime execution providers, in order of preference
    max_tokens: int = 256  # text tasks: longer texts are truncated and flagged
    labels: tuple[str, ...] = ()  # candidate labels, for tasks whose hooks tag by similarity
    options: dict[str, Any] = field(default_factory=dict)  # anything else the task's hooks read

    @functools.cached_property
    def np_dtype(self) -> np.dtype[Any]:
        """The numpy dtype events of this task must carry."""
        return np.dtype(self.dtype)

    @functools.cached_property
    def tensor_nbytes(self) -> int:
        """Bytes of one event's tensor (checked for every event: computed once)."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.np_dtype.itemsize


@dataclass(frozen=True)
class LatticeSettings:
    """[lattice] timings and [placement] weights (see streamlattice.placement.plan.Weights)."""

    heartbeat_s: float = 2.0  # how often a node reports
    node_timeout_s: float = 10.0  # a node silent this long is forgotten
    plan_interval_s: float = 2.0  # how often the router reconsiders the plan
    plan_refresh_s: float = 5.0  # the router republishes an unchanged plan this often
    plan_stale_s: float = 30.0  # a plan older than this means the router is gone
    plan_hold_s: float = 30.0  # a plan that only improves placement waits this long after the last change
    time_factor: float = 1.0  # simulated power time runs this many times faster
    latency: float = Weights.latency
    carbon: float = Weights.carbon
    spare: float = Weights.spare
    headroom: float = Weights.headroom
    hysteresis: float = Weights.hysteresis
    max_moves: int = Weights.max_moves
    latency_budget_ms: float = Weights.latency_budget_ms


@dataclass(frozen=True)
class Lattice:
    """The whole layout; topic names derive from `namespace`."""

    namespace: str
    regions: tuple[Region, ...]
    tasks: dict[str, Task]
    latency_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    settings: LatticeSettings = field(default_factory=lambda: LatticeSettings())
    source: Path | None = None
    power_model: PowerModel = field(default_factory=PowerModel)  # [nodes]: what a worker's CPUs draw

    @property
    def total_partitions(self) -> int:
        """Partitions of every task topic: the sum of the regions' blocks."""
        return sum(r.partitions for r in self.regions)

    def region(self, name: str) -> Region:
        """The region called `name`, or a ConfigError that lists the known ones."""
        for r in self.regions:
            if r.name == name:
                return r
        known = ", ".join(r.name for r in self.regions)
        raise ConfigError(f"unknown region {name!r} (lattice.toml has: {known})")

    def task(self, name: str) -> Task:
        """The task called `name`, or a ConfigError that lists the known ones."""
        try:
            return self.tasks[name]
        except KeyError:
            known = ", ".join(sorted(self.tasks))
            raise ConfigError(f"unknown task {name!r} (lattice.toml has: {known})") from None

    def with_task(self, task: Task) -> Lattice:
        """The same layout with `task` added or replaced (e.g. batch limits tuned for one node)."""
        return replace(self, tasks={**self.tasks, task.name: task})

    def region_of_partition(self, partition: int) -> Region:
        """The region whose block holds `partition`."""
        for r in self.regions:
            if partition in r.block:
                return r
        raise ConfigError(f"partition {partition} is outside every region's block")

    def events_topic(self, task: str) -> str:
        """Topic the task's events are published to."""
        return f"{self.namespace}.events.{task}"

    def results_topic(self, task: str) -> str:
        """Topic the task's results are published to."""
        return f"{self.namespace}.results.{task}"

    def dlq_topic(self, task: str) -> str:
        """Topic the task's refused events are dead-lettered to."""
        return f"{self.namespace}.dlq.{task}"

    def group_id(self, task: str) -> str:
        """Consumer group of the task's workers."""
        return f"{self.namespace}.workers.{task}"

    @property
    def heartbeats_topic(self) -> str:
        """Compacted topic of node heartbeats, keyed by node id."""
        return f"{self.namespace}.lattice.heartbeats"

    @property
    def placement_topic(self) -> str:
        """Compacted topic of placement plans, keyed by task."""
        return f"{self.namespace}.lattice.placement"


def config_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Which lattice.toml to read: the argument, $STREAMLATTICE_CONFIG, ./lattice.toml, else the built-in one."""
    if path is not None:
        return Path(path)
    if env := os.environ.get("STREAMLATTICE_CONFIG"):
        return Path(env)
    local = Path("lattice.toml")
    return local if local.exists() else DEFAULT_CONFIG


def load_lattice(path: str | os.PathLike[str] | None = None) -> Lattice:
    """Read and check a lattice.toml.

    Relative `model =` paths are relative to the file's folder; those of the built-in lattice
    to streamlattice.paths.default_models_base() (the checkout, or the user's data dir).
    """
    p = config_path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p} not found (pass --config FILE or set STREAMLATTICE_CONFIG)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p} is not valid TOML: {e}") from None
    builtin = p.resolve() == DEFAULT_LATTICE.resolve()
    return parse_lattice(raw, base_dir=default_models_base() if builtin else p.resolve().parent, source=p)


def parse_lattice(raw: dict[str, Any], base_dir: Path, source: Path | None = None) -> Lattice:
    """Build a Lattice from parsed TOML; relative model paths are relative to `base_dir`."""
    where = str(source or "lattice.toml")
    meta = raw.get("lattice", {})
    namespace = str(meta.get("namespace", "sl"))
    if not namespace or any(c in namespace for c in " /\\"):
        raise ConfigError(f"{where}: [lattice] namespace {namespace!r} is not a valid topic prefix")

    raw_regions = raw.get("regions")
    if not raw_regions:
        raise ConfigError(f"{where}: no [regions.<name>] tables; declare at least one region")
    regions: list[Region] = []
    first = 0
    for name, spec in raw_regions.items():
        n = int(spec.get("partitions", 4))
        if n < 1:
            raise ConfigError(f"{where}: region {name!r} needs partitions >= 1, got {n}")
        carbon = float(spec.get("carbon_intensity", 400.0))
        regions.append(Region(name, n, first, carbon, float(spec.get("tz_hours", 0.0)), str(spec.get("power", "grid"))))
        first += n

    names = {r.name for r in regions}
    latency: dict[tuple[str, str], float] = {}
    for a, row in raw.get("latency_ms", {}).items():
        for b, ms in row.items():
            if a not in names or b not in names:
                raise ConfigError(f"{where}: latency_ms names unknown region {a!r} or {b!r}")
            latency[(a, b)] = latency[(b, a)] = float(ms)
    for r in regions:
        latency.setdefault((r.name, r.name), 0.0)

    tasks = {name: _parse_task(name, spec, base_dir, where) for name, spec in raw.get("tasks", {}).items()}
    values: dict[str, Any] = {**meta, **raw.get("placement", {})}
    values.pop("namespace", None)
    try:
        typed: dict[str, Any] = {k: int(v) if k == "max_moves" else float(v) for k, v in values.items()}
        settings = LatticeSettings(**typed)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [lattice] or [placement]: {e}") from None
    power_model = _parse_nodes(raw.get("nodes", {}), where)
    return Lattice(namespace, tuple(regions), tasks, latency, settings, source, power_model)


def _parse_nodes(spec: dict[str, Any], where: str) -> PowerModel:
    """[nodes]: the power model of a worker's CPUs (idle_watts, busy_watts per CPU; cpus)."""
    unknown = set(spec) - {"idle_watts", "busy_watts", "cpus"}
    if unknown:
        raise ConfigError(f"{where}: [nodes] has unknown keys {sorted(unknown)} (idle_watts, busy_watts, cpus)")
    try:
        return PowerModel(**{k: float(v) for k, v in spec.items()})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: [nodes]: {e}") from None


def _parse_task(name: str, spec: dict[str, Any], base_dir: Path, where: str) -> Task:
    if "model" not in spec:
        raise ConfigError(f"{where}: task {name!r} has no model path")
    kind = spec.get("input", "tensor")
    if kind not in INPUT_KINDS:
        raise ConfigError(f"{where}: task {name!r} input must be one of {INPUT_KINDS}, got {kind!r}")
    dtype = str(spec.get("dtype", "float32" if kind == "tensor" else "object"))
    try:
        np.dtype(dtype)
    except TypeError:
        raise ConfigError(f"{where}: task {name!r} has unknown dtype {dtype!r}") from None
    model = Path(spec["model"])
    return Task(
        name=name,
        model=model if model.is_absolute() else base_dir / model,
        builder=spec.get("builder"),
        input=kind,
        dtype=dtype,
        shape=tuple(int(d) for d in spec.get("shape", ())),
        max_batch=int(spec.get("max_batch", 256)),
        max_wait_ms=float(spec.get("max_wait_ms", 20)),
        max_event_bytes=int(spec.get("max_event_bytes", 1 << 20)),
        preprocess=spec.get("preprocess"),
        postprocess=spec.get("postprocess"),
        generator=spec.get("generator"),
        watts=None if spec.get("watts") is None else float(spec["watts"]),
        providers=tuple(str(p) for p in spec.get("providers", ("cpu",))),
        max_tokens=int(spec.get("max_tokens", 256)),
        labels=tuple(str(label) for label in spec.get("labels", ())),
        options={k: v for k, v in spec.items() if k not in TASK_KEYS},
    )


def bootstrap_from_env(value: str | None = None) -> str:
    """The Kafka address: the argument, $STREAMLATTICE_BOOTSTRAP, or localhost:9092."""
    return value or os.environ.get("STREAMLATTICE_BOOTSTRAP") or DEFAULT_BOOTSTRAP
