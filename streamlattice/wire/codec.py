"""Avro records on the wire, with fastavro; tensors as raw little-endian bytes numpy can view.

Every record is framed with Avro's single-object encoding (0xC3 0x01, then the 8-byte
CRC-64-AVRO fingerprint of the writer's schema), so a reader knows which schema wrote a
record: it refuses records of a schema it does not know, and resolves records written with
an older version of its own schema (schema evolution) instead of misreading them.

The fingerprint is the specification's: of the schema's Parsing Canonical Form with every
named type it refers to written out at its first use (as Apache Avro's Java
SchemaNormalization and Python `Schema.fingerprint` do), so a producer or consumer built on
those libraries agrees with ours. Up to 0.1.0 the fingerprint left a shared type such as
`streamlattice.Tensor` as a bare name; records framed that way are still read.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streamlattice.errors import InvalidEvent

# The package data copy of the repository's schemas/ (in a checkout, a link to it).
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
# The first byte of a record in a schema registry's wire format (see kafka.registry).
REGISTRY_MAGIC = b"\x00"
# Named types other schemas refer to; parsed first.
SHARED_TYPES = ("tensor",)

Record = dict[str, Any]


def load_schema_json(name: str, schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The JSON of schemas/<name>.avsc."""
    schema: dict[str, Any] = json.loads((schema_dir / f"{name}.avsc").read_text())
    return schema


def parse(schema_json: dict[str, Any], schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    """Parse a schema that may refer to the shared named types in `schema_dir`."""
    named: dict[str, Any] = {}
    for shared in SHARED_TYPES:
        parse_schema(load_schema_json(shared, schema_dir), named_schemas=named)
    parsed: dict[str, Any] = parse_schema(schema_json, named_schemas=named)  # type: ignore[assignment]
    return parsed


def schema_fingerprint(parsed: dict[str, Any]) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint of a parsed schema, as single-object encoding frames it."""
    named = parsed.get("__named_schemas", {})
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(inline_first_use(parsed, named)), "CRC-64-AVRO"))


def legacy_fingerprint(parsed: dict[str, Any]) -> bytes:
    """The fingerprint streamlattice 0.1.0 framed records with (named types left as names)."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def inline_first_use(schema: Any, named: dict[str, Any], defined: set[str] | None = None) -> Any:
    """`schema` with each named type it refers to by name written out where it is first used
    (and referred to by name after that), as the Parsing Canonical Form requires."""
    defined = set() if defined is None else defined
    if isinstance(schema, str):
        if schema in named and schema not in defined:
            return inline_first_use(named[schema], named, defined)
        return schema
    if isinstance(schema, list):
        return [inline_first_use(branch, named, defined) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if not k.startswith("__")}
    kind = schema.get("type")
    if kind in ("record", "error", "enum", "fixed") and "name" in schema:
        defined.add(schema["name"])
    if kind in ("record", "error"):
        out["fields"] = [{**f, "type": inline_first_use(f["type"], named, defined)} for f in schema["fields"]]
    elif kind == "array":
        out["items"] = inline_first_use(schema["items"], named, defined)
    elif kind == "map":
        out["values"] = inline_first_use(schema["values"], named, defined)
    elif isinstance(kind, dict | list) or kind in named:
        out["type"] = inline_first_use(kind, named, defined)
    return out


class Codec(Protocol):
    """What a worker or client needs of a codec: RecordCodec, or kafka.registry's RegistryCodec."""

    name: str

    def encode(self, record: Record) -> bytes: ...

    def decode(self, value: bytes) -> Record: ...


class RecordCodec:
    """Encodes with one schema and decodes records written by it or by any schema it is told of."""

    def __init__(
        self, schema: dict[str, Any], older: Iterable[dict[str, Any]] = (), schema_json: dict[str, Any] | None = None
    ) -> None:
        self.schema = schema
        self.schema_json = schema_json  # as written in its .avsc, for a schema registry
        self.name: str = schema["name"]
        self.fingerprint = schema_fingerprint(schema)
        self._header = MAGIC + self.fingerprint
        # writer fingerprint (the specification's, and the one of 0.1.0) -> writer schema;
        # our own needs no resolution.
        self._writers: dict[bytes, dict[str, Any] | None] = {legacy_fingerprint(schema): None, self.fingerprint: None}
        for old in older:
            self._writers[schema_fingerprint(old)] = self._writers[legacy_fingerprint(old)] = old

    @classmethod
    def named(cls, name: str, schema_dir: Path = SCHEMA_DIR) -> RecordCodec:
        """The codec of schemas/<name>.avsc, reading records of its versions in schemas/previous/ too."""
        older = [
            parse(json.loads(p.read_text()), schema_dir) for p in sorted(schema_dir.glob(f"previous/{name}.*.avsc"))
        ]
        schema_json = load_schema_json(name, schema_dir)
        return cls(parse(schema_json, schema_dir), older, schema_json)

    def encode(self, record: Record) -> bytes:
        """One framed record."""
        buf = io.BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, value: bytes) -> Record:
        """One framed record; InvalidEvent if the bytes are not one we can read."""
        if value is not None and value[:1] == REGISTRY_MAGIC and len(value) >= 5:
            schema_id = int.from_bytes(value[1:5], "big")
            raise InvalidEvent(
                "schema",
                f"framed for a schema registry (Confluent wire format, schema id {schema_id}) but no registry "
                "is configured here: start with --schema-registry URL, or publish Avro single-object encoding",
            )
        if value is None or len(value) < HEADER_LEN or value[:2] != MAGIC:
            raise InvalidEvent("undecodable", f"not an Avro single-object {self.name} record")
        fp = value[2:HEADER_LEN]
        if fp not in self._writers:
            raise InvalidEvent("schema", f"written with unknown schema fingerprint {fp.hex()}, not {self.name}")
        writer = self._writers[fp]
        buf = io.BytesIO(value)
        buf.seek(HEADER_LEN)
        try:
            if writer is None:
                rec = schemaless_reader(buf, self.schema, None)
            else:
                rec = schemaless_reader(buf, writer, self.schema)
        except Exception as e:  # fastavro raises many types on corrupt input
            raise InvalidEvent("undecodable", f"corrupt {self.name} record: {e}") from None
        if buf.tell() != len(value):
            raise InvalidEvent("undecodable", f"{len(value) - buf.tell()} trailing bytes after {self.name} record")
        return rec  # type: ignore[return-value]


# ---- tensors ---------------------------------------------------------------------------


def tensor_record(array: np.ndarray) -> Record:
    """A Tensor record of `array`, little-endian and C-ordered."""
    a = np.asarray(array, order="C")  # not ascontiguousarray: it turns a scalar into shape (1,)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def tensor_rows(batch: np.ndarray) -> list[Record]:
    """The Tensor record of each row of `batch` ([n, ...]), as `tensor_record(batch[i])` makes it.

    One conversion for the whole batch and a bytes slice per row: per-row numpy calls cost
    more than the rest of a small model's result.
    """
    a = np.asarray(batch, order="C")
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    if len(a) == 0:
        return []
    name, shape, raw = a.dtype.name, list(a.shape[1:]), a.tobytes()
    step = len(raw) // len(a)
    return [{"dtype": name, "shape": shape, "data": raw[i : i + step]} for i in range(0, len(raw), step)]


def tensor_view(record: Record) -> np.ndarray:
    """A read-only numpy view of a Tensor record's bytes: no copy."""
    dtype = np.dtype(record["dtype"]).newbyteorder("<")
    return np.frombuffer(record["data"], dtype=dtype).reshape(record["shape"])


def stack_tensors(records: Sequence[Record], dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
    """One [n, *shape] array of tensors already checked to have `dtype` and `shape`.

    The bytes are joined once in C and viewed by numpy: one copy for the whole batch,
    never a numpy object or a copy per event.
    """
    joined = b"".join([r["data"] for r in records])
    return np.frombuffer(joined, dtype=dtype.newbyteorder("<")).reshape((len(records), *shape))


@dataclass(frozen=True)
class Codecs:
    """The codecs of the three record kinds a worker and the SDK handle."""

    event: RecordCodec
    result: RecordCodec
    dead_letter: RecordCodec
    heartbeat: RecordCodec
    placement: RecordCodec

    @classmethod
    def load(cls) -> Codecs:
        """Parse the schemas under schemas/ (once per process: keep the instance)."""
        return cls(*(RecordCodec.named(n) for n in ("event", "result", "dead_letter", "heartbeat", "placement")))


_CODECS: Codecs | None = None


def codecs() -> Codecs:
    """The process-wide codecs, parsed on first use."""
    global _CODECS
    if _CODECS is None:
        _CODECS = Codecs.load()
    return _CODECS
