"""An Open Inference Protocol (KServe v2 REST) gateway: each request row becomes an event.

`POST /v2/models/{task}/infer` turns every row of the request's input into one event of the
task (published in the gateway's region, or the request's `parameters.region`), awaits each
row's result over Kafka (sdk.client.LatticeClient) and answers with the rows' outputs stacked,
in the protocol's JSON. A row the task refuses is a 400, a dead-lettered row a 422 with the
worker's reason, no result in time a 504. Also: server and model metadata, `/v2/health/live`,
`/v2/health/ready` and `/v2/models/{task}/ready`. JSON tensors only: the binary-data
extension is refused with a 400 that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import onnx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamlattice.config import Lattice, Task
from streamlattice.errors import ConfigError, DeadLettered, InferenceTimeout, InvalidEvent
from streamlattice.inference.models import ensure_model, file_version
from streamlattice.kafka.clients import KafkaSettings
from streamlattice.sdk.client import LatticeClient
from streamlattice.wire.records import Result

# numpy dtype name <-> the protocol's tensor datatypes
DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}
NUMPY = {v: k for k, v in DATATYPES.items()}
ONNX_TYPES = {onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.DOUBLE: "FP64", onnx.TensorProto.INT64: "INT64",
              onnx.TensorProto.INT32: "INT32", onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.BOOL: "BOOL",
              onnx.TensorProto.STRING: "BYTES", onnx.TensorProto.FLOAT16: "FP16"}  # fmt: skip


class ProtocolError(Exception):
    """A request the gateway answers with an HTTP error: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error(status: int, message: str) -> JSONResponse:
    """The protocol's error body."""
    return JSONResponse({"error": message}, status_code=status)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array."""
    name = "object" if array.dtype.kind in "OUS" else array.dtype.name
    if name not in DATATYPES:
        raise ProtocolError(500, f"an output of dtype {array.dtype} has no Open Inference Protocol datatype")
    return DATATYPES[name]


def rows_of(task: Task, tensor: dict[str, Any]) -> list[Any]:
    """The request input as one payload per row (the first dimension is the batch)."""
    shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not shape or datatype not in NUMPY or data is None:
        raise ProtocolError(400, "an input needs 'shape' (with the batch first), 'datatype' and 'data'")
    if task.input == "text":
        if datatype != "BYTES":
            raise ProtocolError(400, f"task {task.name} takes text: datatype BYTES, not {datatype}")
        texts = np.asarray(data, dtype=object).reshape(-1)
        return [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
    try:
        array = np.asarray(data, dtype=NUMPY[datatype]).reshape(shape)
    except ValueError as e:
        raise ProtocolError(400, f"input data does not fit shape {shape}: {e}") from None
    return list(array)


def output_tensors(results: list[Result]) -> list[dict[str, Any]]:
    """The rows' outputs stacked into the protocol's output tensors (and label/score if the task sets them)."""
    out = []
    for name in results[0].outputs:
        stacked = np.stack([r.outputs[name] for r in results])
        out.append(
            {
                "name": name,
                "shape": list(stacked.shape),
                "datatype": datatype_of(stacked),
                "data": stacked.reshape(-1).tolist(),
            }
        )
    names = {o["name"] for o in out}
    if "label" not in names and all(r.label is not None for r in results):
        out.append({"name": "label", "shape": [len(results)], "datatype": "BYTES", "data": [r.label for r in results]})
    if "score" not in names and all(r.score is not None for r in results):
        out.append({"name": "score", "shape": [len(results)], "datatype": "FP64", "data": [r.score for r in results]})
    return out


def requested(outputs: list[dict[str, Any]], wanted: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The outputs the request names (all when it names none); a 400 for a name there is none of."""
    if not wanted:
        return outputs
    by_name = {o["name"]: o for o in outputs}
    unknown = [w.get("name") for w in wanted if w.get("name") not in by_name]
    if unknown:
        raise ProtocolError(400, f"no output named {unknown}; there are {sorted(by_name)}")
    return [by_name[w["name"]] for w in wanted]


def model_metadata(task: Task) -> dict[str, Any]:
    """The protocol's model metadata: the task's input, and the model's outputs from its ONNX graph."""
    path = ensure_model(task)
    graph = onnx.load(str(path), load_external_data=False).graph

    def dims(value: Any) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    return {
        "name": task.name,
        "versions": [file_version(path)],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {
                "name": "input",
                "datatype": "BYTES" if task.input == "text" else DATATYPES.get(task.dtype, "FP32"),
                "shape": [-1] if task.input == "text" else [-1, *task.shape],
            }
        ],
        "outputs": [
            {"name": o.name, "datatype": ONNX_TYPES.get(o.type.tensor_type.elem_type, "FP32"), "shape": dims(o)}
            for o in graph.output
        ],
    }


def make_app(lattice: Lattice, region: str, settings: KafkaSettings, timeout_s: float = 10.0) -> Starlette:
    """The gateway's ASGI app; its LatticeClient starts and stops with the app."""
    lattice.region(region)  # a ConfigError naming the known regions
    clients: list[LatticeClient] = []  # made in the lifespan: aiokafka clients need the running loop
    metadata: dict[str, dict[str, Any]] = {}

    def task_of(request: Request) -> Task:
        name = request.path_params["task"]
        try:
            return lattice.task(name)
        except ConfigError as e:
            raise ProtocolError(404, str(e)) from None

    async def server_metadata(request: Request) -> JSONResponse:
        return JSONResponse({"name": "streamlattice", "version": "2", "extensions": []})

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    async def model(request: Request) -> JSONResponse:
        try:
            task = task_of(request)
        except ProtocolError as e:
            return error(e.status, str(e))
        if task.name not in metadata:
            metadata[task.name] = await asyncio.get_running_loop().run_in_executor(None, model_metadata, task)
        return JSONResponse(metadata[task.name])

    async def model_ready(request: Request) -> JSONResponse:
        try:
            task_of(request)
        except ProtocolError as e:
            return error(e.status, str(e))
        return JSONResponse({"ready": True})

    async def infer(request: Request) -> JSONResponse:
        try:
            task = task_of(request)
            if "inference-header-content-length" in request.headers:
                raise ProtocolError(400, "the binary tensor data extension is not supported: send JSON data")
            body = await request.json()
            inputs = body.get("inputs") or []
            if len(inputs) != 1:
                raise ProtocolError(400, f"task {task.name} takes exactly one input, got {len(inputs)}")
            where = (body.get("parameters") or {}).get("region", region)
            lattice.region(where)
            rows = rows_of(task, inputs[0])
            client = clients[0]
            results = await asyncio.gather(*(client.infer(task.name, where, row, timeout=timeout_s) for row in rows))
        except ProtocolError as e:
            return error(e.status, str(e))
        except (InvalidEvent, ConfigError) as e:
            return error(400, str(e))
        except DeadLettered as e:
            return error(422, str(e))
        except InferenceTimeout as e:
            return error(504, str(e))
        except ValueError as e:  # not JSON
            return error(400, f"the request body is not the protocol's JSON: {e}")
        try:
            outputs = requested(output_tensors(list(results)) if results else [], body.get("outputs"))
        except ProtocolError as e:
            return error(e.status, str(e))
        answer: dict[str, Any] = {
            "model_name": task.name,
            "model_version": results[0].model_version if results else "",
            "outputs": outputs,
        }
        if "id" in body:
            answer["id"] = body["id"]
        return JSONResponse(answer)

    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models/{task}", model),
        Route("/v2/models/{task}/ready", model_ready),
        Route("/v2/models/{task}/infer", infer, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        client = LatticeClient(lattice=lattice, settings=settings)
        await client.start()
        clients.append(client)
        try:
            yield
        finally:
            clients.clear()
            await client.stop()

    return Starlette(routes=routes, lifespan=lifespan)
