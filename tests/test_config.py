"""lattice.toml: the default layout, and clear errors for broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamlattice.config import DEFAULT_CONFIG, load_lattice, parse_lattice
from streamlattice.errors import ConfigError


def test_the_default_layout_has_three_regions_of_four_partitions() -> None:
    lt = load_lattice(DEFAULT_CONFIG)
    assert [(r.name, r.first_partition, r.partitions) for r in lt.regions] == [
        ("eu-west", 0, 4),
        ("us-east", 4, 4),
        ("ap-south", 8, 4),
    ]
    assert lt.total_partitions == 12
    assert lt.latency_ms[("us-east", "eu-west")] == lt.latency_ms[("eu-west", "us-east")] == 40.0
    assert lt.events_topic("sensor") == "sl.events.sensor"
    assert lt.region_of_partition(5).name == "us-east"
    assert lt.task("sensor").shape == (3, 64)
    assert (lt.power_model.idle_watts, lt.power_model.busy_watts, lt.power_model.cpus) == (0.74, 3.5, 1.0)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({}, "no \\[regions"),
        ({"regions": {"a": {"partitions": 0}}}, "partitions >= 1"),
        ({"regions": {"a": {}}, "latency_ms": {"a": {"b": 1}}}, "unknown region"),
        ({"regions": {"a": {}}, "tasks": {"t": {}}}, "no model path"),
        ({"regions": {"a": {}}, "tasks": {"t": {"model": "m", "input": "audio"}}}, "input must be"),
        ({"regions": {"a": {}}, "tasks": {"t": {"model": "m", "dtype": "float99"}}}, "unknown dtype"),
        ({"regions": {"a": {}}, "nodes": {"idle_watts": 5, "busy_watts": 2}}, "idle_watts <= busy_watts"),
        ({"regions": {"a": {}}, "nodes": {"watts": 5}}, "unknown keys \\['watts'\\]"),
    ],
)
def test_broken_layouts_are_refused_with_a_reason(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lattice(raw, Path("."))


def test_unknown_names_list_the_known_ones() -> None:
    lt = load_lattice(DEFAULT_CONFIG)
    with pytest.raises(ConfigError, match="eu-west, us-east, ap-south"):
        lt.region("mars")
    with pytest.raises(ConfigError, match="sensor"):
        lt.task("smell")


def test_a_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--config"):
        load_lattice(tmp_path / "nope.toml")
