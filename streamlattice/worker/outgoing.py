"""Outgoing records: a batch's results and dead letters, and the smaller forms a refused one takes.

A result goes to the results partition of its event's region block; a dead letter goes to the
dead-letter partition numbered like its event's, holding the original bytes (cut beyond a size
the broker takes, with the original's size and SHA-256) and the reason, also in headers.
How they are sent and committed is the checkpoint's business (worker.checkpoint).
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import numpy as np
from aiokafka.structs import ConsumerRecord

from streamlattice.config import Lattice, Task
from streamlattice.errors import InvalidEvent
from streamlattice.inference.models import LoadedModel
from streamlattice.inference.tasks import Inferred
from streamlattice.kafka.clients import Message
from streamlattice.kafka.partitioning import partition_for
from streamlattice.metrics import WorkerMetrics
from streamlattice.power.energy import EnergyMeter, grams
from streamlattice.power.sources import PowerMeter
from streamlattice.wire.clock import now_us
from streamlattice.wire.codec import Codec, codecs, tensor_rows
from streamlattice.worker.batch import Batch

# Headers of an event that its result carries on (trace context, the payload's type, the
# caller's correlation id); others stay with the event.
PROPAGATED_HEADERS = frozenset({"traceparent", "tracestate", "content-type", "correlation-id"})
# The flag of a result whose event sat in another region's partition block (a producer that let
# its client's partitioner choose): it is served all the same, and answered in its own block.
OUTSIDE_REGION_FLAG = "outside_region_block"
ERROR_HEADER = "sl.error.reason"
KIND_HEADER = "sl.error.kind"
# A dead letter holds the original whole up to this size (or the task's max_event_bytes, if
# larger), and beyond it a prefix with the original's size and SHA-256: a whole original can be
# larger than the broker takes (message.max.bytes, 1 MiB by default), and a dead letter the
# broker refuses would stop the partition.
DEAD_LETTER_ORIGINAL_BYTES = 64 * 1024
# What a refused dead letter keeps of its original in its fallback forms (see worker.outbox).
DEAD_LETTER_CUTS = (1024, 0)

log = logging.getLogger(__name__)


class Outgoing(NamedTuple):
    """One record on its way out and the event it answers."""

    source: ConsumerRecord[bytes, bytes]
    message: Message
    error: InvalidEvent | None  # why the event is dead-lettered; None for a result


class Answers:
    """Builds the records a node sends for a task's events."""

    def __init__(
        self,
        lattice: Lattice,
        task: Task,
        node_id: str,
        power: PowerMeter,
        energy: EnergyMeter,
        metrics: WorkerMetrics,
        result_codec: Codec | None = None,
        dead_letter_codec: Codec | None = None,
    ) -> None:
        self.lattice = lattice
        self.task = task
        self.node_id = node_id
        self.power = power
        self.energy = energy
        self.metrics = metrics
        self.dead_letter_cap = max(DEAD_LETTER_ORIGINAL_BYTES, task.max_event_bytes)
        self.result_codec = result_codec or codecs().result
        self.dead_letter_codec = dead_letter_codec or codecs().dead_letter
        self._regions = {r.name: r for r in lattice.regions}
        self._results_topic = lattice.results_topic(task.name)
        self._dlq_topic = lattice.dlq_topic(task.name)
        self._warned: set[tuple[int, str]] = set()

    def results(self, batch: Batch, inferred: Inferred, model: LoadedModel) -> list[Outgoing]:
        """The result records of a batch's accepted events, each with the input record it answers.

        Each carries its share of the energy the whole process used since the previous batch of
        results (streamlattice.power.energy states the method) and its carbon at the node's intensity.
        """
        inferred_us = now_us()
        n = len(batch.accepted)
        outputs, flags = inferred.outputs, inferred.flags
        labels, scores = inferred.annotations.labels, inferred.annotations.scores
        joules = self.energy.take()
        carbon = grams(joules, self.power.reading.carbon_intensity)
        energy_j, carbon_g = joules / n, carbon / n
        self.metrics.energy_j.inc(joules)
        self.metrics.carbon_g.inc(carbon)
        encode = self.result_codec.encode
        # per batch, not per event: each output's rows, the scores as floats, the clock
        columns = [(name, tensor_rows(out)) for name, out in outputs.items()]
        score_list = None if scores is None else np.asarray(scores, dtype=np.float64).tolist()
        regions = self._regions
        produced_us = now_us()
        messages: list[Outgoing] = []
        outside = 0
        for i, (m, ev) in enumerate(batch.accepted):
            region = regions[ev["region"]]
            row_flags = [] if flags is None else flags[i]
            if m.partition not in region.block:
                row_flags = [*row_flags, OUTSIDE_REGION_FLAG]
                outside += 1
                self._warn_outside(m.topic, m.partition, region.name)
            record = {
                "event_id": ev["event_id"],
                "task": self.task.name,
                "region": ev["region"],
                "source_id": ev["source_id"],
                "node_id": self.node_id,
                "model_name": model.name,
                "model_version": model.version,
                "label": None if labels is None else labels[i],
                "score": None if score_list is None else score_list[i],
                "flags": row_flags,
                "outputs": {name: rows[i] for name, rows in columns},
                "event_time_us": ev["event_time_us"],
                "consumed_us": batch.consumed_us,
                "inferred_us": inferred_us,
                "produced_us": produced_us,
                "energy_j": energy_j,
                "carbon_g": carbon_g,
            }
            partition = partition_for(region, ev["source_id"].encode())
            headers = [h for h in m.headers if h[0] in PROPAGATED_HEADERS] if m.headers else None
            messages.append(Outgoing(m, (self._results_topic, encode(record), m.key, partition, headers or None), None))
        if outside:
            self.metrics.outside_region.inc(outside)
        return messages

    def _warn_outside(self, topic: str, partition: int, region: str) -> None:
        """Say once per partition and region that events arrive outside their region's block."""
        if (partition, region) in self._warned:
            return
        self._warned.add((partition, region))
        log.warning(
            "node %s: %s[%d] holds events of region %s, outside its partition block %s: served and flagged %r; "
            "publish with the region's partition (see the README's 'Publishing from any Kafka client')",
            self.node_id,
            topic,
            partition,
            region,
            f"{self._regions[region].block.start}-{self._regions[region].block.stop - 1}",
            OUTSIDE_REGION_FLAG,
        )

    def dead_letters(self, batch: Batch) -> list[Outgoing]:
        """The dead-letter records of a batch's rejected events."""
        return [self.dead_letter(m, err, self.dead_letter_cap) for m, err in batch.rejected]

    def dead_letter(self, m: ConsumerRecord[bytes, bytes], err: InvalidEvent, keep: int) -> Outgoing:
        """The dead letter of one record, holding at most `keep` bytes of its original."""
        original = m.value or b""
        record = {
            "original": original[:keep],
            "original_key": m.key,
            "original_size": len(original),
            "original_sha256": hashlib.sha256(original).hexdigest(),
            "reason": err.reason,
            "kind": err.kind,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "node_id": self.node_id,
            "time_us": now_us(),
        }
        headers = [(ERROR_HEADER, err.reason.encode()), (KIND_HEADER, err.kind.encode())]
        if m.headers:
            headers += [h for h in m.headers if h[0] in PROPAGATED_HEADERS]
        message: Message = (self._dlq_topic, self.dead_letter_codec.encode(record), m.key, m.partition, headers)
        return Outgoing(m, message, err)

    def fallback(self, item: Outgoing, error: BaseException, attempt: int) -> Outgoing | None:
        """The form a record Kafka refused is tried in next (see worker.outbox): a result becomes
        its event's dead letter, a dead letter keeps less of its original; None when none is left."""
        refused = f"{type(error).__name__}: {error}"
        if item.error is None:
            cuts: tuple[int, ...] = (self.dead_letter_cap, *DEAD_LETTER_CUTS)
            err = InvalidEvent("produce", f"its result was refused by Kafka ({refused})")
        else:
            cuts = DEAD_LETTER_CUTS
            err = InvalidEvent(
                item.error.kind, f"{item.error.reason}; its dead letter was refused by Kafka ({refused})"
            )
        if attempt > len(cuts):
            return None
        return self.dead_letter(item.source, err, cuts[attempt - 1])
