"""The region-block partitioner: a region's events stay in its block, one key in one partition."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2

from streamlattice.config import Region


def partition_for(region: Region, key: bytes) -> int:
    """The partition of `key` inside `region`'s block.

    Uses Kafka's murmur2 (as the Java client's default partitioner does), so any
    Kafka client can compute the same partition from the region's block.
    """
    return region.first_partition + _slot(key, region.partitions)


@functools.lru_cache(maxsize=1 << 16)
def _slot(key: bytes, partitions: int) -> int:
    # murmur2 is pure Python (~1.5 us); a worker sees the same sources again and again
    return (murmur2(key) & 0x7FFFFFFF) % partitions
