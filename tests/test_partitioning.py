"""The region-block partitioner."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamlattice.config import Region
from streamlattice.kafka.partitioning import partition_for

REGIONS = [Region("eu-west", 4, 0, 250), Region("us-east", 4, 4, 380), Region("ap-south", 5, 8, 620)]


@given(st.sampled_from(REGIONS), st.binary(min_size=0, max_size=64))
def test_every_key_lands_in_its_regions_block_and_always_the_same_partition(region: Region, key: bytes) -> None:
    p = partition_for(region, key)
    assert p in region.block
    assert partition_for(region, key) == p


def test_keys_spread_over_the_whole_block() -> None:
    for region in REGIONS:
        hits = {partition_for(region, f"device-{i}".encode()) for i in range(500)}
        assert hits == set(region.block)


def test_matches_kafkas_murmur2_partitioner_inside_the_block() -> None:
    # The Java client's default partitioner puts key b"machine-0001" of a 4-partition topic here;
    # the region's block applies the same hash to its own partitions.
    from aiokafka.partitioner import murmur2

    key = b"machine-0001"
    assert partition_for(REGIONS[1], key) == 4 + (murmur2(key) & 0x7FFFFFFF) % 4
