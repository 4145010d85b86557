"""The wheel runs outside the checkout: built, installed into a fresh venv, and driven from an empty folder.

How the venv gets its dependencies: installing the wheel's dependencies from an index takes
minutes and a network, so the fresh venv (made with `python -m venv --without-pip`) instead
sees this test venv's site-packages through a `.pth` file. A path line in a `.pth` file only
extends sys.path: the `.pth` files inside that folder are not run, so the editable install's
finder, which maps `streamlattice` to the checkout, never loads. The wheel itself is
installed with `--no-deps` into the fresh venv's own site-packages, which comes first on
sys.path. The test asserts that `streamlattice` and `workers` then import from the venv.

Kafka's jars come from a temporary $STREAMLATTICE_CACHE that links to the checkout's jar
cache (resolving them again from Maven Central is slow); state, the dev broker's data and
the built model land in a temporary XDG data dir, as they would for a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

from streamlattice import paths
from streamlattice.devbroker import broker as dev

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]
IMPORTED_FROM = "import streamlattice, workers; print(streamlattice.__file__, workers.__file__)"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh venv with the wheel installed, and the environment of a user without a checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("streamlattice-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "streamlattice/lattice.toml" in names
    schemas = REPO / "schemas"
    assert {f"streamlattice/wire/schemas/{s.relative_to(schemas)}" for s in schemas.rglob("*.avsc")} <= set(names)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    own = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (own / "test-venv-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    cache = tmp / "cache"
    cache.mkdir()
    jars = paths.cache_dir() / f"kafka-{dev.KAFKA_VERSION}"
    if (jars / ".complete").exists():
        (cache / jars.name).symlink_to(jars)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLATTICE_", "XDG_"))}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        STREAMLATTICE_CACHE=str(cache),
        XDG_DATA_HOME=str(tmp / "data"),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        PYTHONPATH="",
    )
    work = tmp / "work"
    work.mkdir()
    env["SL_TEST_CWD"] = str(work)
    yield venv, env


def test_the_installed_package_runs_outside_the_checkout(installed: tuple[Path, dict[str, str]]) -> None:
    venv, env = installed
    work = Path(env["SL_TEST_CWD"])
    data = Path(env["XDG_DATA_HOME"]) / "streamlattice"

    def sl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(venv / "bin" / "streamlattice"), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=work,
            env=env,
        )
        assert done.returncode == 0, f"streamlattice {' '.join(args)}: {done.stderr[-3000:]}"
        return done

    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import streamlattice, workers; print(streamlattice.__file__, workers.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        check=True,
    ).stdout.split()
    for path in where:
        assert Path(path).is_relative_to(venv), f"{path} is not the installed package"
        assert not Path(path).resolve().is_relative_to(REPO), f"{path} is in the checkout"

    assert "Usage: streamlattice" in sl("--help").stdout
    port = dev.free_port()
    bootstrap = ["--bootstrap", f"localhost:{port}"]
    worker: subprocess.Popen[bytes] | None = None
    try:
        sl("broker", "start", "--port", str(port), timeout=300)
        assert (data / "broker" / "cluster.json").exists()
        assert "sl.events.sensor" in sl(*bootstrap, "topics", "init").stdout
        sl("models", "build", "--task", "sensor", timeout=300)
        assert (data / "models" / "sensor.onnx").exists()
        with open(work / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [str(venv / "bin" / "streamlattice"), *bootstrap, "worker", "--task", "sensor", "--region", "eu-west"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=work,
                env=env,
            )
        sl(*bootstrap, "produce", "--task", "sensor", "--count", "50")
        results = sl(
            *bootstrap, "results", "--task", "sensor", "--follow", "--from-beginning", "--limit", "50", timeout=180
        )
        assert len(results.stdout.splitlines()) == 50, (work / "worker.log").read_text()[-3000:]
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
        subprocess.run(
            [str(venv / "bin" / "streamlattice"), "broker", "stop"], cwd=work, env=env, timeout=120, check=False
        )
