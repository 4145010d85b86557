"""Hanging transactions: found on a lattice's topics and aborted, as `kafka-transactions.sh` does.

A transaction that a partition holds open and that no transaction coordinator knows any more
is never completed: its partition's last stable offset stays at the transaction's first
record, so a `read_committed` reader (every subscriber of results, the chaos checker) reads
nothing beyond it, though the workers go on writing. Seen in chaos soak run 5 (exactly-once,
seed 2001, Kafka 3.9.2): two brokers were killed a minute apart, and the broker that took the
coordinator's partition of `__transaction_state` over answered for two transactional ids
before it had loaded their state, as far as its log shows. It gave them new producer ids
(InvalidProducerIdMapping for the worker's offset commit, then InitProducerId from the worker)
and so forgot the transactions in flight: results partitions 2 and 9 kept one open each
(offsets 75,353 and 128,997), and 65,350 answered events stayed invisible to the end
(docs/chaos/README.md). Java clients would have met the same broker; KIP-890's partition
verification does not help, since the partitions had been added to the transactions.

Kafka's own remedy is an operator's: `kafka-transactions.sh find-hanging`, then `abort`
(KIP-664). This module does the same with three requests aiokafka 0.14 does not offer:
DescribeProducers (who holds a transaction open on a partition, since when), ListTransactions
(which producers a coordinator still counts as in a transaction) and WriteTxnMarkers (the abort
marker, written by the partition's leader). A transaction is taken for hanging only when it has
written nothing for `after_s` (well past the transaction timeout, after which a coordinator
that knows it aborts it) and no coordinator lists its producer as in a transaction; a broker
that does not answer, or a partition of `__transaction_state` without a leader, leaves every
transaction alone for this round. Aborting hides its records, which is what the coordinator
would have done: their events were not committed as consumed either, so the worker that took
the partition over has answered them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import TopicPartition
from aiokafka import errors as Errors
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Array,
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    String,
    TaggedFields,
)

log = logging.getLogger(__name__)

TRANSACTION_STATE = "__transaction_state"
CONSUMER_OFFSETS = "__consumer_offsets"
# Transactions that a coordinator still has in hand (ListTransactions' states).
IN_TRANSACTION = ("Ongoing", "PrepareCommit", "PrepareAbort")


# ---- the decision (no I/O) ---------------------------------------------------------------


@dataclass(frozen=True)
class OpenTransaction:
    """A transaction a partition holds open (one of DescribeProducers' active producers)."""

    tp: TopicPartition
    producer_id: int
    producer_epoch: int
    coordinator_epoch: int
    start_offset: int  # of its first record: the partition's last stable offset stops here
    last_write_ms: int  # the timestamp of its last batch there (the writer's clock, CreateTime)


def silent(opened: Iterable[OpenTransaction], now_ms: int, after_s: float) -> list[OpenTransaction]:
    """The transactions of `opened` that have written nothing for `after_s`."""
    return [t for t in opened if now_ms - t.last_write_ms >= after_s * 1000]


def hanging(quiet: Iterable[OpenTransaction], in_hand: set[int]) -> list[OpenTransaction]:
    """The transactions of `quiet` (see `silent`) that no coordinator will complete: whose producer
    no coordinator lists as in a transaction (`in_hand`)."""
    return [t for t in quiet if t.producer_id not in in_hand]


def offsets_partition(group_id: str, partitions: int) -> int:
    """The partition of `__consumer_offsets` that holds `group_id`'s offsets (Kafka's own rule:
    the absolute value of the group id's Java hash code, modulo the partition count). A
    worker's transaction commits its offsets there too, so a hanging one holds that partition too."""
    data = group_id.encode("utf-16-be")  # Java strings hash their UTF-16 code units
    h = 0
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    signed = h - (1 << 32) if h & 0x80000000 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions  # Kafka's Utils.abs


# ---- the requests ------------------------------------------------------------------------


class DescribeProducersResponse_v0(Response):
    API_KEY = 61
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("error_code", Int16),
                        ("error_message", CompactString("utf-8")),
                        (
                            "active_producers",
                            CompactArray(
                                ("producer_id", Int64),
                                ("producer_epoch", Int32),
                                ("last_sequence", Int32),
                                ("last_timestamp", Int64),
                                ("coordinator_epoch", Int32),
                                ("current_txn_start_offset", Int64),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeProducersRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 61
    API_VERSION = 0
    RESPONSE_TYPE = DescribeProducersResponse_v0
    SCHEMA = Schema(
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


DescribeProducersStruct: TypeAlias = DescribeProducersRequest_v0


class DescribeProducersRequest(Request[DescribeProducersStruct]):
    API_KEY = 61

    def __init__(self, topics: list[tuple[str, list[int]]]) -> None:
        self._topics = topics

    def build(self, request_struct_class: type[DescribeProducersStruct]) -> DescribeProducersStruct:
        return request_struct_class([(name, partitions, {}) for name, partitions in self._topics], {})


class ListTransactionsResponse_v0(Response):
    API_KEY = 66
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("unknown_state_filters", CompactArray(CompactString("utf-8"))),
        (
            "transaction_states",
            CompactArray(
                ("transactional_id", CompactString("utf-8")),
                ("producer_id", Int64),
                ("transaction_state", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class ListTransactionsRequest_v0(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 66
    API_VERSION = 0
    RESPONSE_TYPE = ListTransactionsResponse_v0
    SCHEMA = Schema(
        ("state_filters", CompactArray(CompactString("utf-8"))),
        ("producer_id_filters", CompactArray(Int64)),
        ("tags", TaggedFields),
    )


ListTransactionsStruct: TypeAlias = ListTransactionsRequest_v0


class ListTransactionsRequest(Request[ListTransactionsStruct]):
    API_KEY = 66

    def __init__(self, states: Sequence[str], producer_ids: Sequence[int]) -> None:
        self._states = list(states)
        self._producer_ids = list(producer_ids)

    def build(self, request_struct_class: type[ListTransactionsStruct]) -> ListTransactionsStruct:
        return request_struct_class(self._states, self._producer_ids, {})


class WriteTxnMarkersResponse_v0(Response):
    API_KEY = 27
    API_VERSION = 0
    SCHEMA = Schema(
        (
            "markers",
            Array(
                ("producer_id", Int64),
                (
                    "topics",
                    Array(
                        ("name", String("utf-8")),
                        ("partitions", Array(("partition_index", Int32), ("error_code", Int16))),
                    ),
                ),
            ),
        ),
    )


class WriteTxnMarkersRequest_v0(RequestStruct):
    API_KEY = 27
    API_VERSION = 0
    RESPONSE_TYPE = WriteTxnMarkersResponse_v0
    SCHEMA = Schema(
        (
            "markers",
            Array(
                ("producer_id", Int64),
                ("producer_epoch", Int16),
                ("transaction_result", Boolean),
                ("topics", Array(("name", String("utf-8")), ("partition_indexes", Array(Int32)))),
                ("coordinator_epoch", Int32),
            ),
        ),
    )


WriteTxnMarkersStruct: TypeAlias = WriteTxnMarkersRequest_v0


class WriteTxnMarkersRequest(Request[WriteTxnMarkersStruct]):
    API_KEY = 27

    def __init__(self, aborts: Sequence[OpenTransaction]) -> None:
        self._aborts = list(aborts)

    def build(self, request_struct_class: type[WriteTxnMarkersStruct]) -> WriteTxnMarkersStruct:
        markers = [
            (t.producer_id, t.producer_epoch, False, [(t.tp.topic, [t.tp.partition])], t.coordinator_epoch)
            for t in self._aborts
        ]
        return request_struct_class(markers)


# ---- the round ---------------------------------------------------------------------------


class Unanswered(Errors.KafkaError):
    """A broker did not answer (or refused) a request this round needs: nothing is aborted."""

    retriable = True


async def _leaders(client: AIOKafkaClient, tps: Iterable[TopicPartition]) -> dict[int, list[TopicPartition]]:
    by_leader: dict[int, list[TopicPartition]] = {}
    for topic in sorted({tp.topic for tp in tps}):
        await client._wait_on_metadata(topic)
    for tp in tps:
        leader = client.cluster.leader_for_partition(tp)
        if leader is None or leader < 0:
            raise Unanswered(f"{tp.topic}[{tp.partition}] has no leader")
        by_leader.setdefault(leader, []).append(tp)
    return by_leader


async def open_transactions(client: AIOKafkaClient, tps: Sequence[TopicPartition]) -> list[OpenTransaction]:
    """Every transaction that `tps` hold open, from their leaders."""
    opened: list[OpenTransaction] = []
    for leader, held in (await _leaders(client, tps)).items():
        topics: dict[str, list[int]] = {}
        for tp in held:
            topics.setdefault(tp.topic, []).append(tp.partition)
        response: Any = await client.send(leader, DescribeProducersRequest(sorted(topics.items())))
        for name, partitions, _ in response.topics:
            for index, code, message, producers, _ in partitions:
                if code:
                    raise Unanswered(
                        f"DescribeProducers of {name}[{index}]: {Errors.for_code(code).__name__} {message}"
                    )
                for pid, epoch, _, last_ms, coordinator_epoch, start, _ in producers:
                    if start >= 0:
                        opened.append(
                            OpenTransaction(TopicPartition(name, index), pid, epoch, coordinator_epoch, start, last_ms)
                        )
    return opened


async def in_transaction(client: AIOKafkaClient, producer_ids: Sequence[int]) -> set[int]:
    """Which of `producer_ids` some coordinator lists as in a transaction (asks every broker)."""
    if not producer_ids:
        return set()
    held: set[int] = set()
    # a coordinator partition without a leader answers on no broker: its transactions are unknown
    partitions = await client._wait_on_metadata(TRANSACTION_STATE)
    leaders = {p: client.cluster.leader_for_partition(TopicPartition(TRANSACTION_STATE, p)) for p in partitions}
    leaderless = sorted(p for p, leader in leaders.items() if leader is None or leader < 0)
    if leaderless:
        raise Unanswered(f"{TRANSACTION_STATE} partitions {leaderless} have no leader")
    for broker in client.cluster.brokers():
        response: Any = await client.send(broker.nodeId, ListTransactionsRequest(IN_TRANSACTION, producer_ids))
        if response.error_code:
            raise Unanswered(
                f"ListTransactions on broker {broker.nodeId}: {Errors.for_code(response.error_code).__name__}"
            )
        held |= {pid for _, pid, state, _ in response.transaction_states if state in IN_TRANSACTION}
    return held


async def abort(client: AIOKafkaClient, transactions: Sequence[OpenTransaction]) -> None:
    """Write an abort marker for each of `transactions` on its partition (by the partition's leader)."""
    for leader, tps in (await _leaders(client, [t.tp for t in transactions])).items():
        batch = [t for t in transactions if t.tp in tps]
        response: Any = await client.send(leader, WriteTxnMarkersRequest(batch))
        for pid, topics in response.markers:
            for name, partitions in topics:
                for index, code in partitions:
                    if code:
                        raise Errors.for_code(code)(f"abort marker for producer {pid} on {name}[{index}] refused")


async def heal(
    client: AIOKafkaClient, tps: Sequence[TopicPartition], after_s: float, now_ms: int, timeout_s: float = 10.0
) -> list[OpenTransaction]:
    """Find the hanging transactions of `tps` and abort them; returns those aborted.

    Raises Unanswered (or the broker's error) when a broker this needs does not answer in
    `timeout_s`: then nothing is aborted this round."""
    try:
        async with asyncio.timeout(timeout_s):
            quiet = silent(await open_transactions(client, tps), now_ms, after_s)
            if not quiet:
                return []
            found = hanging(quiet, await in_transaction(client, sorted({t.producer_id for t in quiet})))
            if found:
                await abort(client, found)
    except TimeoutError:
        raise Unanswered(f"no answer within {timeout_s:g} s") from None
    except (Errors.KafkaConnectionError, Errors.NodeNotReadyError, Errors.RequestTimedOutError) as e:
        raise Unanswered(str(e) or type(e).__name__) from e
    for t in found:
        log.warning(
            "aborted a hanging transaction on %s[%d] (producer %d, epoch %d, open since offset %d, silent %.0f s): "
            "no coordinator completes it, and read_committed readers could not read past it",
            t.tp.topic,
            t.tp.partition,
            t.producer_id,
            t.producer_epoch,
            t.start_offset,
            (now_ms - t.last_write_ms) / 1000,
        )
    return found
