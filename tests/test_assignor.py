"""Region-local assignment: every partition exactly once, a region's block on its own nodes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamlattice.assignor import Member, assign_region_local

REGION_OF = {p: ("eu" if p < 4 else "us" if p < 8 else "ap") for p in range(12)}


def test_each_region_block_goes_to_its_own_members() -> None:
    out = assign_region_local(range(12), REGION_OF, {"a": "eu", "b": "us", "c": "ap"})
    assert out == {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7], "c": [8, 9, 10, 11]}


def test_two_members_of_a_region_share_its_block() -> None:
    out = assign_region_local(range(12), REGION_OF, {"a1": "eu", "a2": "eu", "b": "us", "c": "ap"})
    assert sorted(out["a1"] + out["a2"]) == [0, 1, 2, 3]
    assert len(out["a1"]) == len(out["a2"]) == 2


def test_a_region_without_members_is_served_by_the_others() -> None:
    out = assign_region_local(range(12), REGION_OF, {"a": "eu", "b": "us"})
    assert set(out["a"]) >= {0, 1, 2, 3} and set(out["b"]) >= {4, 5, 6, 7}
    assert sorted(out["a"] + out["b"]) == list(range(12))
    assert abs(len(out["a"]) - len(out["b"])) <= 1


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from(["eu", "us", "ap", "xx", None]), max_size=8))
def test_every_partition_is_assigned_exactly_once_when_anyone_is_there(members: dict) -> None:
    out = assign_region_local(range(12), REGION_OF, members)
    assigned = [p for ps in out.values() for p in ps]
    if members:
        assert sorted(assigned) == list(range(12))
    else:
        assert assigned == []
    assert out == assign_region_local(range(12), REGION_OF, dict(reversed(list(members.items()))))


def test_member_metadata_round_trip_and_foreign_bytes() -> None:
    m = Member("eu-1", "eu")
    assert Member.decode(m.encode()) == m
    assert Member.decode(b"") is None
    assert Member.decode(b"\x00\x01") is None
