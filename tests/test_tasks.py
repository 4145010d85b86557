"""Vision, language and a user's own model, end to end through Kafka, with their bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import WorkerProcess, collect_results, publish_raw, read_dlq
from onnx import TensorProto, helper

from streamlattice.config import Lattice, load_lattice
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.kafka.partitioning import partition_for
from streamlattice.kafka.topics import ensure_topics
from streamlattice.sdk.client import LatticeProducer
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import codecs, tensor_record
from workers.language import model as language
from workers.onnx_build import IR_VERSION, OPSET
from workers.vision import model as vision

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


async def publish_all(
    bootstrap: str, lattice: Lattice, task: str, payloads: list, region: str = "eu-west"
) -> list[str]:
    """Publish payloads in order with the SDK; their event ids."""
    async with LatticeProducer(lattice=lattice, settings=KafkaSettings(bootstrap=bootstrap)) as producer:
        return [await producer.publish(task, region, f"src-{i % 7}", p) for i, p in enumerate(payloads)]


def raw_event(task: str, source: str, tensor: np.ndarray | None = None, text: str | None = None) -> bytes:
    """An event record any Avro client could write, bypassing the SDK's checks."""
    return codecs().event.encode(
        {
            "event_id": f"raw-{task}-{source}",
            "event_time_us": now_us(),
            "region": "eu-west",
            "task": task,
            "source_id": source,
            "tensor": None if tensor is None else tensor_record(tensor),
            "text": text,
        }
    )


def test_vision_labels_match_onnxruntime_and_the_truth(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], models: dict[str, Path]
) -> None:
    workers(lattice, "eu-west", task="vision").wait_assigned()
    _, test_x, _, test_y = vision.split()
    images, truth = test_x[:200], test_y[:200]
    ids = asyncio.run(publish_all(kafka, lattice, "vision", list(images)))
    results = asyncio.run(collect_results(kafka, lattice, "vision", set(ids), timeout=60))

    session = ort.InferenceSession(str(models["vision"]), providers=["CPUExecutionProvider"])
    probabilities, direct = session.run(["probabilities", "label"], {"image": images})
    got = np.array([int(results[e][0].label) for e in ids])
    assert (got == direct).all()
    assert (got == truth).mean() >= 0.95
    for i, e in enumerate(ids):
        r = results[e][0]
        assert r.score == pytest.approx(float(probabilities[i, direct[i]]), rel=1e-5)
        assert r.model_name == "vision" and len(r.model_version) == 12


def test_language_embeddings_match_onnxruntime_and_tickets_get_their_label(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess], models: dict[str, Path]
) -> None:
    workers(lattice, "eu-west", task="language").wait_assigned(timeout=90)
    texts = [t for ts in language.TICKETS.values() for t in ts]
    intents = [k for k, ts in language.TICKETS.items() for _ in ts]
    ids = asyncio.run(publish_all(kafka, lattice, "language", texts))
    results = asyncio.run(collect_results(kafka, lattice, "language", set(ids), timeout=90))

    session = ort.InferenceSession(str(models["language"]), providers=["CPUExecutionProvider"])
    tok_ids, mask, _ = language.tokenize(texts, lattice.task("language").max_tokens)
    (direct,) = session.run(["embedding"], {"input_ids": tok_ids, "attention_mask": mask})
    labels = list(lattice.task("language").labels)
    label_ids, label_mask, _ = language.tokenize(labels, lattice.task("language").max_tokens)
    (label_emb,) = session.run(["embedding"], {"input_ids": label_ids, "attention_mask": label_mask})
    for i, e in enumerate(ids):
        r = results[e][0]
        emb = r.outputs["embedding"]
        assert emb.shape == (384,)
        np.testing.assert_allclose(emb, direct[i], atol=1e-5)
        assert r.label == labels[int((direct[i] @ label_emb.T).argmax())]
        assert r.score == pytest.approx(float((direct[i] @ label_emb.T).max()), abs=1e-5)
        assert r.flags == []
    assert np.mean([results[e][0].label == intent for e, intent in zip(ids, intents, strict=True)]) >= 0.8


def test_bad_input_per_task_is_dead_lettered_or_flagged_and_workers_live_on(
    kafka: str, lattice: Lattice, workers: Callable[..., WorkerProcess]
) -> None:
    v = workers(lattice, "eu-west", task="vision")
    lang = workers(lattice, "eu-west", task="language")
    v.wait_assigned()
    lang.wait_assigned(timeout=90)
    region = lattice.region("eu-west")
    key = b"src-bad"
    p = partition_for(region, key)
    bad_vision = {
        "shape": raw_event("vision", "wrong-shape", tensor=np.zeros((28, 28), np.uint8)),
        "dtype": raw_event("vision", "wrong-dtype", tensor=np.zeros((32, 32), np.int16)),
    }
    bad_language = {"empty": raw_event("language", "empty", text="   ")}
    asyncio.run(publish_raw(kafka, lattice.events_topic("vision"), [(key, b, p) for b in bad_vision.values()]))
    asyncio.run(publish_raw(kafka, lattice.events_topic("language"), [(key, b, p) for b in bad_language.values()]))
    long_text = "the printer on the third floor is jammed again " * 40  # far beyond max_tokens = 32
    good = asyncio.run(publish_all(kafka, lattice, "vision", list(vision.split()[1][:5])))
    texts = asyncio.run(publish_all(kafka, lattice, "language", [long_text, "my password expired"]))

    vision_dead = asyncio.run(read_dlq(kafka, lattice, "vision", 2, timeout=30))
    language_dead = asyncio.run(read_dlq(kafka, lattice, "language", 1, timeout=30))
    assert sorted(letter["kind"] for _, letter in vision_dead) == ["dtype", "shape"]
    assert {letter["kind"]: letter["original"] for _, letter in vision_dead} == bad_vision
    assert [(letter["kind"], letter["original"]) for _, letter in language_dead] == [("empty", bad_language["empty"])]
    reasons = {letter["kind"]: letter["reason"] for _, letter in vision_dead}
    assert reasons["shape"] == "shape [28, 28] where task 'vision' takes [32, 32]"
    assert reasons["dtype"] == "dtype int16 where task 'vision' takes uint8"

    answered = asyncio.run(collect_results(kafka, lattice, "vision", set(good), timeout=30))
    assert set(good) <= answered.keys()
    text_results = asyncio.run(collect_results(kafka, lattice, "language", set(texts), timeout=30))
    truncated, short = (text_results[e][0] for e in texts)
    assert truncated.flags == ["truncated"] and truncated.label == "hardware failure"
    assert short.flags == [] and short.label == "password reset"
    assert v.alive() and lang.alive()


def their_model(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A user's own ONNX model, made on the fly: y = x @ W + b over 4 features, and its argmax."""
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["features", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y"]),
        helper.make_node("ArgMax", ["y"], ["winner"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "theirs",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("winner", TensorProto.INT64, ["N"]),
        ],
        [onnx.numpy_helper.from_array(w, "W"), onnx.numpy_helper.from_array(b, "B")],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = IR_VERSION
    onnx.save(m, str(path))
    return w, b


def test_a_user_brings_their_own_model_with_no_code_change(
    kafka: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    w, b = their_model(tmp_path / "theirs.onnx")
    config = tmp_path / "lattice.toml"
    config.write_text(f"""
[lattice]
namespace = "byo{tmp_path.name[-6:].replace("_", "")}"
[regions.home]
partitions = 2
[tasks.theirs]
model = "theirs.onnx"
input = "tensor"
dtype = "float32"
shape = [4]
max_batch = 32
""")
    lattice = load_lattice(config)
    asyncio.run(ensure_topics(KafkaSettings(bootstrap=kafka), lattice))
    # `streamlattice worker --task theirs`, preferring a GPU this machine does not have
    worker = workers(lattice, "home", task="theirs", args=("--providers", "cuda,cpu"))
    worker.wait_assigned()
    fallbacks = [line for line in worker.text().splitlines() if "not available here" in line]
    assert len(fallbacks) == 1 and "CUDAExecutionProvider" in fallbacks[0]
    assert "using CPUExecutionProvider" in fallbacks[0]
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    ids = asyncio.run(publish_all(kafka, lattice, "theirs", list(x), region="home"))
    results = asyncio.run(collect_results(kafka, lattice, "theirs", set(ids), timeout=60))
    for i, e in enumerate(ids):
        (r,) = results[e]
        np.testing.assert_allclose(r.outputs["y"], x[i] @ w + b, rtol=1e-5, atol=1e-6)
        assert int(r.outputs["winner"]) == int(np.argmax(x[i] @ w + b))
        assert r.label is None and r.model_name == "theirs"
