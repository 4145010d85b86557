"""Records framed for a schema registry: the Confluent wire format.

A record is a zero byte, the 4-byte big-endian id the registry gave its writer's schema, then
the Avro body: what confluent-kafka's `AvroSerializer` writes and its `AvroDeserializer`
reads, and what Confluent Schema Registry, Karapace and Apicurio Registry (through its
Confluent-compatible API) serve ids for. The registry client is confluent-kafka's.

Subjects follow TopicNameStrategy (`<topic>-value`). A shared named type (`streamlattice.Tensor`)
is registered once under its full name and referenced from the schemas that use it, so a
foreign reader resolves it through the registry.

A record is decoded with the writer schema its id names, resolved against our own schema: an
event written with a newer or older compatible version of `event.avsc` is served. Records in
single-object encoding are still read, so that nothing in flight is lost when a lattice moves
to a registry.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import struct
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer

from streamlattice.errors import ConfigError, InvalidEvent, RegistryUnavailable
from streamlattice.wire.codec import (
    REGISTRY_MAGIC,
    SHARED_TYPES,
    Record,
    RecordCodec,
    load_schema_json,
    schema_fingerprint,
)

if TYPE_CHECKING:
    from confluent_kafka.schema_registry import SchemaRegistryClient

HEADER = struct.Struct(">bI")  # magic byte (0), schema id
REFUSED_TTL_S = 30.0


def subject(topic: str) -> str:
    """The subject of a topic's record values (TopicNameStrategy)."""
    return f"{topic}-value"


def registry_client(url: str, auth: str | None = None) -> SchemaRegistryClient:
    """One client per registry for the whole process (a `mock://` registry lives in its client).

    `auth` is "user:password" for HTTP basic authentication.
    """
    return _client(url, auth)


@functools.cache
def _client(url: str, auth: str | None) -> SchemaRegistryClient:
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as e:
        raise ConfigError(
            f"--schema-registry needs confluent-kafka's registry client ({e}): pip install 'streamlattice[registry]'"
        ) from None

    conf: dict[str, Any] = {"url": url}
    if auth:
        conf["basic.auth.user.info"] = auth
    try:
        return SchemaRegistryClient.new_client(conf)
    except ValueError as e:
        raise ConfigError(f"schema registry {url!r}: {e}") from None


class Registry:
    """Registers our schemas and finds writer schemas by id, each once per process."""

    def __init__(self, client: SchemaRegistryClient, url: str = "") -> None:
        self.client = client
        self.url = url
        self._lock = threading.Lock()
        self._shared: dict[str, int] = {}  # shared type name -> its registered version
        self._ids: dict[str, int] = {}  # subject -> id of our schema under it
        self._writers: dict[int, dict[str, Any]] = {}  # schema id -> parsed writer schema
        # schema id -> (monotonic time, why no record of it can be read), asked again after
        # REFUSED_TTL_S: a registry's follower may not know a schema its leader just registered
        self._refused: dict[int, tuple[float, InvalidEvent]] = {}

    @classmethod
    def connect(cls, url: str, auth: str | None = None) -> Registry:
        """The process's Registry for `url`."""
        return _registry(url, auth)

    def schema_id(self, topic: str, codec: RecordCodec) -> int:
        """The id of `codec`'s schema under `topic`'s subject, registering it if it is new there."""
        name = subject(topic)
        with self._lock:
            if name not in self._ids:
                if codec.schema_json is None:
                    raise ConfigError(f"the {codec.name} codec has no schema JSON to register")
                self._ids[name] = self._register(name, codec.schema_json)
            return self._ids[name]

    def _register(self, name: str, schema_json: dict[str, Any]) -> int:
        from confluent_kafka.schema_registry import Schema, SchemaReference
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            refs = []
            for shared in SHARED_TYPES:
                shared_json = load_schema_json(shared)
                full = f"{shared_json['namespace']}.{shared_json['name']}"
                if full not in json.dumps(schema_json):
                    continue
                if full not in self._shared:
                    shared_schema = Schema(json.dumps(shared_json), "AVRO")
                    reg = self.client.register_schema_full_response(full, shared_schema)
                    # a registry that answers with the id alone: ask for the version
                    version = reg.version or self.client.lookup_schema(full, shared_schema).version
                    self._shared[full] = int(version)
                refs.append(SchemaReference(full, full, self._shared[full]))
            return int(self.client.register_schema(name, Schema(json.dumps(schema_json), "AVRO", refs)))
        except SchemaRegistryError as e:
            raise ConfigError(f"schema registry {self.url} refused subject {name}: {e}") from None
        except Exception as e:  # the client's transport errors: the registry is down, or not one
            raise RegistryUnavailable(f"schema registry {self.url} unreachable while registering {name}: {e}") from e

    def writer(self, schema_id: int) -> dict[str, Any]:
        """The parsed schema the registry knows by `schema_id`, its references resolved."""
        found = self._writers.get(schema_id)
        if found is not None:
            return found
        refused = self._refused.get(schema_id)
        if refused is not None and time.monotonic() - refused[0] < REFUSED_TTL_S:
            raise refused[1]  # asked lately: a flood of such records does not flood the registry
        try:
            parsed = self._fetch(schema_id)
        except InvalidEvent as e:
            self._refused[schema_id] = (time.monotonic(), e)
            raise
        with self._lock:
            self._writers[schema_id] = parsed
        return parsed

    def knows(self, schema_id: int) -> bool:
        """Whether `writer(schema_id)` answers without asking the registry."""
        refused = self._refused.get(schema_id)
        return schema_id in self._writers or (refused is not None and time.monotonic() - refused[0] < REFUSED_TTL_S)

    def _fetch(self, schema_id: int) -> dict[str, Any]:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self.client.get_schema(schema_id)
            named: dict[str, Any] = {}
            self._parse_references(schema, named)
            text = json.loads(schema.schema_str or "null")
        except SchemaRegistryError as e:
            if e.http_status_code == 404:  # the record names a schema the registry never had
                raise InvalidEvent("schema", f"schema id {schema_id} is not in the registry {self.url}") from None
            raise RegistryUnavailable(f"schema registry {self.url} failed on schema id {schema_id}: {e}") from None
        except ValueError as e:
            raise InvalidEvent("schema", f"schema id {schema_id} is not JSON: {e}") from None
        except Exception as e:  # the client's transport errors: not the record's fault, so never a dead letter
            raise RegistryUnavailable(f"schema registry {self.url} unreachable for schema id {schema_id}: {e}") from e
        try:
            parsed: dict[str, Any] = parse_schema(text, named_schemas=named)  # type: ignore[assignment]
        except Exception as e:  # fastavro's SchemaParseException and friends
            raise InvalidEvent("schema", f"schema id {schema_id} is not a schema fastavro can read: {e}") from None
        return parsed

    def _parse_references(self, schema: Any, named: dict[str, Any]) -> None:
        for ref in schema.references or []:
            referenced = self.client.get_version(ref.subject, ref.version).schema
            self._parse_references(referenced, named)
            parse_schema(json.loads(referenced.schema_str), named_schemas=named)


@functools.cache
def _registry(url: str, auth: str | None) -> Registry:
    return Registry(registry_client(url, auth), url)


class RegistryCodec:
    """A RecordCodec's records in the registry's wire format, for one topic.

    Encodes with our schema's id under the topic's subject (registered on first use: call
    `prepare` at start to do it off the event loop); decodes either framing. A writer schema
    id seen for the first time is fetched from the registry (once, then cached).
    """

    def __init__(self, codec: RecordCodec, registry: Registry, topic: str | None = None) -> None:
        self.codec = codec
        self.registry = registry
        self.topic = topic
        self.name = codec.name
        self._header: bytes | None = None
        # writer schema id -> (writer, reader): reader None when the writer is our own schema
        self._resolved: dict[int, tuple[dict[str, Any], dict[str, Any] | None]] = {}

    def prepare(self) -> int:
        """Register (or find) our schema under the topic's subject; its id."""
        if self.topic is None:
            raise ConfigError(f"a {self.name} codec with no topic decodes only: it has no subject to encode for")
        schema_id = self.registry.schema_id(self.topic, self.codec)
        self._header = HEADER.pack(0, schema_id)
        return schema_id

    def encode(self, record: Record) -> bytes:
        """One record in the registry's wire format."""
        if self._header is None:
            self.prepare()
        assert self._header is not None
        buf = io.BytesIO()
        buf.write(self._header)
        schemaless_writer(buf, self.codec.schema, record)
        return buf.getvalue()

    def unknown_ids(self, values: Iterable[bytes | None]) -> set[int]:
        """The writer schema ids among `values` that decoding would have to ask the registry for."""
        ids = {HEADER.unpack_from(v)[1] for v in values if v is not None and len(v) >= HEADER.size and v[0] == 0}
        return {i for i in ids if i not in self._resolved and not self.registry.knows(i)}

    def learn(self, schema_id: int) -> None:
        """Ask the registry for a writer schema now (blocking: from a thread), so that `decode`
        need not; RegistryUnavailable if it does not answer."""
        with contextlib.suppress(InvalidEvent):  # remembered: decode raises it for each such record
            self._resolve(schema_id)

    def decode(self, value: bytes) -> Record:
        """One record in either framing; InvalidEvent if it is not one we can read."""
        if value is None or value[:1] != REGISTRY_MAGIC:
            return self.codec.decode(value)  # single-object encoding, or its clear error
        if len(value) < HEADER.size:
            raise InvalidEvent("undecodable", f"a schema-registry framed {self.name} record needs {HEADER.size} bytes")
        _, schema_id = HEADER.unpack_from(value)
        writer, reader = self._resolved.get(schema_id) or self._resolve(schema_id)
        buf = io.BytesIO(value)
        buf.seek(HEADER.size)
        try:
            rec = schemaless_reader(buf, writer, reader)
        except Exception as e:  # fastavro raises many types on corrupt or incompatible input
            raise InvalidEvent("undecodable", f"{self.name} record with schema id {schema_id}: {e}") from None
        if buf.tell() != len(value):
            raise InvalidEvent("undecodable", f"{len(value) - buf.tell()} trailing bytes after {self.name} record")
        return rec  # type: ignore[return-value]

    def _resolve(self, schema_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
        writer = self.registry.writer(schema_id)
        if writer.get("name") != self.codec.schema["name"]:
            raise InvalidEvent("schema", f"schema id {schema_id} is a {writer.get('name')}, not {self.name}")
        same = schema_fingerprint(writer) == self.codec.fingerprint
        self._resolved[schema_id] = (writer, None if same else self.codec.schema)
        return self._resolved[schema_id]
