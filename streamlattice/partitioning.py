"""The region-block partitioner: a region's events stay in its block, one key in one partition."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from streamlattice.config import Region


def partition_for(region: Region, key: bytes) -> int:
    """The partition of `key` inside `region`'s block.

    Uses Kafka's murmur2 (as the Java client's default partitioner does), so any
    Kafka client can compute the same partition from the region's block.
    """
    return region.first_partition + (murmur2(key) & 0x7FFFFFFF) % region.partitions
