"""Model loading and building: providers in order of preference, skipping up-to-date builds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamlattice.config import DEFAULT_CONFIG, load_lattice, parse_lattice
from streamlattice.errors import ConfigError
from streamlattice.inference.models import build_model, choose_providers, load_model, session_options


def test_providers_are_taken_in_order_and_missing_ones_are_named_once(caplog: pytest.LogCaptureFixture) -> None:
    available = ["CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING):
        assert choose_providers(["cuda", "cpu"], available) == ["CPUExecutionProvider"]
    (line,) = caplog.messages
    assert "CUDAExecutionProvider" in line and "using CPUExecutionProvider" in line
    caplog.clear()
    assert choose_providers(["cpu"], available) == ["CPUExecutionProvider"]
    assert not caplog.messages
    assert choose_providers(["tensorrt", "cuda"], ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider"
    ]
    assert choose_providers(["rocm"], available) == ["CPUExecutionProvider"]  # never nothing


def test_sessions_are_set_up_for_a_small_node() -> None:
    opts = session_options(1)
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1


def test_a_loaded_model_reports_its_identity_and_providers(models: dict[str, Path]) -> None:
    task = load_lattice(DEFAULT_CONFIG).task("sensor")
    loaded = load_model(task, providers=["cuda", "cpu"])
    assert loaded.providers == ["CPUExecutionProvider"]
    assert loaded.name == "sensor" and len(loaded.version) == 12
    assert loaded.input_names == ["windows"] and loaded.output_names == ["score", "anomaly"]


def test_models_build_skips_what_is_up_to_date_and_rebuilds_what_changed(tmp_path: Path) -> None:
    raw = {"regions": {"a": {}}, "tasks": {"sensor": {"model": "sensor.onnx", "builder": "workers.sensor.model:build"}}}
    task = parse_lattice(raw, tmp_path).task("sensor")
    first = build_model(task, progress=lambda _: None)
    assert first.action == "built" and task.model.exists()
    assert build_model(task, progress=lambda _: None).action == "up to date"
    task.model.write_bytes(b"tampered")  # a changed model file is rebuilt
    again = build_model(task, progress=lambda _: None)
    assert again.action == "built" and again.version == first.version
    assert build_model(task, force=True, progress=lambda _: None).action == "built"


def test_a_task_without_a_builder_is_the_users_own(tmp_path: Path) -> None:
    task = parse_lattice({"regions": {"a": {}}, "tasks": {"t": {"model": "m.onnx"}}}, tmp_path).task("t")
    with pytest.raises(ConfigError, match="no builder"):
        build_model(task)
    with pytest.raises(ConfigError, match="missing and the task has no builder"):
        load_model(task)
