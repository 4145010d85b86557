"""Group assignment by plan and the region-local sticky fallback: every partition exactly once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streamlattice.placement.assignment import AssignmentInfo, Member, assign_by_plan, assign_sticky_region_local

REGION_OF = {p: ("eu" if p < 4 else "us" if p < 8 else "ap") for p in range(12)}


def m(node: str, region: str, owned: tuple[int, ...] = ()) -> Member:
    return Member(node, region, 100.0, owned)


def test_each_region_block_goes_to_its_own_members() -> None:
    out = assign_sticky_region_local(range(12), REGION_OF, {"a": m("a", "eu"), "b": m("b", "us"), "c": m("c", "ap")})
    assert out == {"a": [0, 1, 2, 3], "b": [4, 5, 6, 7], "c": [8, 9, 10, 11]}


def test_two_members_of_a_region_share_its_block() -> None:
    out = assign_sticky_region_local(
        range(12), REGION_OF, {"a1": m("a1", "eu"), "a2": m("a2", "eu"), "b": m("b", "us"), "c": m("c", "ap")}
    )
    assert sorted(out["a1"] + out["a2"]) == [0, 1, 2, 3]
    assert len(out["a1"]) == len(out["a2"]) == 2


def test_members_keep_what_they_own_within_a_fair_share() -> None:
    members = {"a1": m("a1", "eu", (0, 1, 2, 3)), "a2": m("a2", "eu", ()), "b": m("b", "us", (4, 5, 6, 7, 8))}
    out = assign_sticky_region_local(range(12), REGION_OF, members)
    eu = {k: [p for p in v if p < 4] for k, v in out.items()}
    assert eu["a1"] == [0, 1] and eu["a2"] == [2, 3]  # a newcomer gets its share, a1 keeps two of its own
    assert out["b"] == [4, 5, 6, 7]  # owned, in its region; ap's orphans went to the less loaded
    assert sorted(p for v in out.values() for p in v) == list(range(12))


def test_a_region_without_members_is_served_by_the_others() -> None:
    out = assign_sticky_region_local(range(12), REGION_OF, {"a": m("a", "eu"), "b": m("b", "us")})
    assert set(out["a"]) >= {0, 1, 2, 3} and set(out["b"]) >= {4, 5, 6, 7}
    assert sorted(out["a"] + out["b"]) == list(range(12))
    assert abs(len(out["a"]) - len(out["b"])) <= 1


def test_the_plan_decides_and_missing_nodes_go_to_the_least_loaded_member_of_their_region() -> None:
    plan = {p: "green" for p in range(8)} | {8: "gone", 9: "gone", 10: "ap", 11: "ap"}
    members = {"m1": m("green", "us"), "m2": m("ap", "ap"), "m3": m("ap2", "ap")}
    out = assign_by_plan(range(12), plan, REGION_OF, members)
    assert out["m1"] == list(range(8))
    assert out["m2"] == [10, 11] and out["m3"] == [8, 9]


members_st = st.dictionaries(
    st.text("abcde", min_size=1, max_size=4),
    st.one_of(
        st.none(),
        st.builds(
            m,
            st.text("abcde", min_size=1, max_size=3),
            st.sampled_from(["eu", "us", "ap", "xx"]),
            st.lists(st.integers(0, 14), max_size=6).map(tuple),
        ),
    ),
    max_size=8,
)


@given(members_st)
def test_every_partition_is_assigned_exactly_once_when_anyone_is_there(members: dict) -> None:
    for out in (
        assign_sticky_region_local(range(12), REGION_OF, members),
        assign_by_plan(range(12), {p: f"n{p % 3}" for p in range(12)}, REGION_OF, members),
    ):
        assigned = sorted(p for ps in out.values() for p in ps)
        assert assigned == (list(range(12)) if members else [])
    assert assign_sticky_region_local(range(12), REGION_OF, members) == assign_sticky_region_local(
        range(12), REGION_OF, dict(reversed(list(members.items())))
    )


def test_member_and_assignment_metadata_round_trip_and_foreign_bytes() -> None:
    me = Member("eu-1", "eu", 1234.5, (1, 2))
    assert Member.decode(me.encode()) == me
    assert Member.decode(b"") is None and Member.decode(b"\x00\x01") is None
    info = AssignmentInfo(7, "plan")
    assert AssignmentInfo.decode(info.encode()) == info
    assert AssignmentInfo.decode(b"") == AssignmentInfo(0, "sticky")
