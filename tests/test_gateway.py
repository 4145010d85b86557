"""The Open Inference Protocol gateway, called by a client nobody here wrote: tritonclient's HTTP client."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from streamlattice.config import Lattice
from streamlattice.devbroker import broker as dev
from workers.sensor.signals import generate

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]
REPO = Path(__file__).resolve().parents[1]


def start_gateway(kafka: str, lattice: Lattice, tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streamlattice", "--bootstrap", kafka, "--config", str(lattice.source)]
    return subprocess.Popen(
        [*command, "gateway", "--port", str(port), "--region", "eu-west", "--timeout", "20"],
        stdout=(tmp_path / "gateway.log").open("wb"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )


def test_tritonclient_gets_answers_metadata_and_clear_errors_from_the_gateway(
    kafka: str, lattice: Lattice, workers, tmp_path: Path
) -> None:
    w = workers(lattice, "eu-west")
    port = dev.free_port()
    gateway = start_gateway(kafka, lattice, tmp_path, port)
    try:
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}", network_timeout=30.0)
        deadline = time.monotonic() + 60
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            assert gateway.poll() is None, (tmp_path / "gateway.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not come up"
            time.sleep(0.5)
        assert client.is_server_live() and client.is_model_ready("sensor")
        meta = client.get_model_metadata("sensor")
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64]}]
        assert {o["name"] for o in meta["outputs"]} == {"score", "anomaly"}
        w.wait_assigned()

        windows = generate(4, seed=11)
        x = windows.x[:4].astype(np.float32)
        request = triton.InferInput("input", list(x.shape), "FP32")
        request.set_data_from_numpy(x, binary_data=False)
        wanted = [triton.InferRequestedOutput(n, binary_data=False) for n in ("score", "label")]
        answer = client.infer("sensor", [request], outputs=wanted, request_id="r-1")

        scores, labels = answer.as_numpy("score"), answer.as_numpy("label")
        assert scores.shape[0] == 4 and labels.shape == (4,)
        assert answer.get_response()["id"] == "r-1" and answer.get_response()["model_name"] == "sensor"
        assert set(labels.astype(str)) <= {"anomaly", "normal"}

        wrong = triton.InferInput("input", [1, 5, 64], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 5, 64), np.float32), binary_data=False)
        with pytest.raises(InferenceServerException, match="shape"):
            client.infer("sensor", [wrong], outputs=wanted)
        poisoned = triton.InferInput("input", [1, 3, 64], "FP32")  # the producer takes it, the worker does not
        poisoned.set_data_from_numpy(np.full((1, 3, 64), np.nan, np.float32), binary_data=False)
        with pytest.raises(InferenceServerException, match=r"dead-lettered \(non_finite\)"):
            client.infer("sensor", [poisoned], outputs=wanted)
        with pytest.raises(InferenceServerException, match="unknown task"):
            client.get_model_metadata("no-such-task")
    finally:
        gateway.terminate()
        gateway.wait(30)
