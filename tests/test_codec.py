"""Records on the wire: round trips, zero-copy tensor views, refusals, schema evolution."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import foreign_record

from streamlattice.errors import InvalidEvent
from streamlattice.wire.codec import (
    MAGIC,
    RecordCodec,
    codecs,
    inline_first_use,
    legacy_fingerprint,
    load_schema_json,
    parse,
    stack_tensors,
    tensor_record,
    tensor_rows,
    tensor_view,
)


def event(payload: np.ndarray, event_id: str = "e1") -> dict:
    return {
        "event_id": event_id,
        "event_time_us": 1_700_000_000_000_000,
        "region": "eu-west",
        "task": "sensor",
        "source_id": "machine-7",
        "tensor": tensor_record(payload),
        "text": None,
    }


def test_event_round_trip_keeps_every_field_and_value() -> None:
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    rec = event(x)
    back = codecs().event.decode(codecs().event.encode(rec))
    assert {k: v for k, v in back.items() if k != "tensor"} == {k: v for k, v in rec.items() if k != "tensor"}
    np.testing.assert_array_equal(tensor_view(back["tensor"]), x)


def test_text_event_round_trip() -> None:
    rec = {**event(np.zeros(1, np.float32)), "tensor": None, "text": "printer on floor 3 is jammed"}
    assert codecs().event.decode(codecs().event.encode(rec))["text"] == "printer on floor 3 is jammed"


def test_tensor_view_is_zero_copy() -> None:
    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rec = codecs().event.decode(codecs().event.encode(event(x)))
    view = tensor_view(rec["tensor"])
    assert not view.flags.owndata  # a view of the decoded bytes, not a copy
    assert view.base is not None
    np.testing.assert_array_equal(view, x)


def test_stack_tensors_builds_one_batch_in_order() -> None:
    xs = [np.full((3, 64), i, dtype=np.float32) for i in range(5)]
    recs = [codecs().event.decode(codecs().event.encode(event(x, f"e{i}")))["tensor"] for i, x in enumerate(xs)]
    batch = stack_tensors(recs, np.dtype("float32"), (3, 64))
    assert batch.shape == (5, 3, 64) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, np.stack(xs))


def test_big_endian_arrays_are_sent_little_endian() -> None:
    x = np.arange(4, dtype=">f4")
    rec = tensor_record(x)
    assert rec["dtype"] == "float32"
    np.testing.assert_array_equal(tensor_view(rec), x)


@pytest.mark.parametrize(
    "value, kind",
    [
        (b"", "undecodable"),
        (b"garbage bytes that are not avro", "undecodable"),
        (MAGIC + b"\x00" * 8 + b"\x02", "schema"),
    ],
)
def test_bytes_that_are_not_an_event_are_refused(value: bytes, kind: str) -> None:
    with pytest.raises(InvalidEvent) as err:
        codecs().event.decode(value)
    assert err.value.kind == kind


def test_a_record_of_another_schema_is_refused_with_its_fingerprint() -> None:
    result_bytes = foreign_record()
    with pytest.raises(InvalidEvent, match="unknown schema fingerprint") as err:
        codecs().event.decode(result_bytes)
    assert err.value.kind == "schema"


def test_truncated_and_padded_records_are_refused() -> None:
    good = codecs().event.encode(event(np.zeros((3, 64), np.float32)))
    with pytest.raises(InvalidEvent):
        codecs().event.decode(good[:-10])
    with pytest.raises(InvalidEvent, match="trailing"):
        codecs().event.decode(good + b"\x00")


def test_a_newer_reader_reads_records_written_with_the_old_schema() -> None:
    old_schema = parse(load_schema_json("event"))
    newer_json = copy.deepcopy(load_schema_json("event"))
    newer_json["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})
    newer = RecordCodec(parse(newer_json), older=[old_schema])
    written_old = RecordCodec(old_schema).encode(event(np.ones((3, 64), np.float32)))

    rec = newer.decode(written_old)

    assert rec["trace_id"] is None
    assert rec["event_id"] == "e1"
    np.testing.assert_array_equal(tensor_view(rec["tensor"]), np.ones((3, 64), np.float32))
    # and the newer schema's own records carry the new field
    assert newer.decode(newer.encode({**rec, "trace_id": "abc"}))["trace_id"] == "abc"


def test_scalars_keep_their_zero_dimensional_shape() -> None:
    rec = tensor_record(np.float32(2.5))
    assert rec["shape"] == []
    view = tensor_view(rec)
    assert view.shape == () and float(view) == 2.5


@pytest.mark.parametrize(
    "batch",
    [
        np.arange(6, dtype=np.float32),  # one scalar per row
        np.array([True, False, True]),
        np.arange(24, dtype=">i4").reshape(4, 2, 3),  # big-endian rows come out little-endian
        np.zeros((0, 3), dtype=np.float32),
    ],
)
def test_tensor_rows_are_the_tensor_records_of_each_row(batch: np.ndarray) -> None:
    rows = tensor_rows(batch)
    assert rows == [tensor_record(row) for row in batch]
    for row, expected in zip(rows, batch, strict=True):
        np.testing.assert_array_equal(tensor_view(row), expected)


def test_a_dead_letter_of_the_previous_schema_is_read_with_the_new_fields_defaulted() -> None:
    old = RecordCodec(parse(load_schema_json("previous/dead_letter.1")))
    record = {
        "original": b"abc",
        "original_key": None,
        "reason": "r",
        "kind": "undecodable",
        "topic": "t",
        "partition": 1,
        "offset": 2,
        "node_id": "n",
        "time_us": 3,
    }
    decoded = codecs().dead_letter.decode(old.encode(record))
    assert decoded == {**record, "original_size": -1, "original_sha256": None}
    assert old.fingerprint != codecs().dead_letter.fingerprint


SCHEMAS = ("event", "result", "dead_letter", "heartbeat", "placement")


@pytest.mark.parametrize("name", SCHEMAS)
def test_our_fingerprints_are_the_ones_apache_avro_computes(name: str) -> None:
    """Apache Avro's own code (the `avro` package, as Java's SchemaNormalization) is the reference:
    a producer or consumer built on it must agree with our single-object framing."""
    import avro.schema
    from avro.name import Names

    names = Names()
    avro.schema.make_avsc_object(load_schema_json("tensor"), names)
    theirs = avro.schema.make_avsc_object(load_schema_json(name), names).fingerprint("CRC-64-AVRO")
    assert getattr(codecs(), name).fingerprint == bytes(theirs)


def test_the_event_fingerprint_is_the_one_the_specification_gives() -> None:
    assert codecs().event.fingerprint.hex() == "69f9836adce4897e"  # named types inlined at first use


def test_a_record_framed_with_the_fingerprint_of_0_1_0_is_still_read() -> None:
    codec = codecs().event
    record = codec.encode(event(np.ones((2, 64), np.float32)))
    legacy = MAGIC + legacy_fingerprint(codec.schema) + record[len(MAGIC) + 8 :]
    assert legacy[:10] != record[:10]  # the two framings differ for a schema with a shared type
    assert codec.decode(legacy)["event_id"] == "e1"


def test_a_named_type_is_written_out_once_then_referred_to_by_name() -> None:
    parsed = parse(
        {
            "type": "record",
            "name": "Pair",
            "namespace": "streamlattice",
            "fields": [{"name": "a", "type": "streamlattice.Tensor"}, {"name": "b", "type": "streamlattice.Tensor"}],
        }
    )
    inlined = inline_first_use(parsed, parsed["__named_schemas"])
    assert isinstance(inlined["fields"][0]["type"], dict) and inlined["fields"][1]["type"] == "streamlattice.Tensor"
