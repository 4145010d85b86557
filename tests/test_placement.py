"""Placement invariants (property-based) and hand-made lattices whose right plan is known."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamlattice.placement.plan import NodeState, PartitionState, Weights, make_plan

REGIONS = ["eu", "us", "ap"]
LATENCY = {(a, b): 0.0 if a == b else 40.0 if {a, b} == {"eu", "us"} else 100.0 for a in REGIONS for b in REGIONS}


def block(region: str, first: int, n: int = 4, load: float = 10.0) -> list[PartitionState]:
    return [PartitionState(p, region, load) for p in range(first, first + n)]


PARTS = block("eu", 0) + block("us", 4) + block("ap", 8)

nodes_st = st.lists(
    st.builds(
        NodeState,
        node_id=st.text("abcdefgh", min_size=1, max_size=4),
        region=st.sampled_from(REGIONS),
        capacity_eps=st.floats(50, 5000),
        renewable_fraction=st.floats(0, 1),
        carbon_intensity=st.floats(10, 700),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda n: n.node_id,
)
parts_st = st.lists(
    st.builds(
        PartitionState, partition=st.integers(0, 200), home_region=st.sampled_from(REGIONS), load_eps=st.floats(0, 100)
    ),
    min_size=1,
    max_size=40,
    unique_by=lambda p: p.partition,
)


@settings(max_examples=200, deadline=None)
@given(parts_st, nodes_st, st.data())
def test_every_partition_is_assigned_exactly_once_to_a_live_node(parts, nodes, data) -> None:
    previous = data.draw(
        st.dictionaries(st.sampled_from([p.partition for p in parts]), st.text("abcdefghxyz", min_size=1, max_size=4))
    )
    plan = make_plan(parts, nodes, LATENCY, previous=previous)
    assert sorted(p.partition for p in plan.placements) == sorted(p.partition for p in parts)
    assert {p.node_id for p in plan.placements} <= {n.node_id for n in nodes}


@settings(max_examples=200, deadline=None)
@given(parts_st, nodes_st)
def test_the_plan_is_deterministic_whatever_the_input_order(parts, nodes) -> None:
    a = make_plan(parts, nodes, LATENCY)
    b = make_plan(list(reversed(parts)), list(reversed(nodes)), LATENCY)
    assert a == b


@settings(max_examples=200, deadline=None)
@given(parts_st, nodes_st)
def test_capacity_with_headroom_holds_when_the_lattice_can_carry_the_load(parts, nodes) -> None:
    w = Weights()
    total_cap = sum(n.capacity_eps for n in nodes)
    # loads small against every node and half the lattice's capacity at most
    scale = min(
        0.5 * w.headroom * total_cap / sum(max(p.load_eps, w.min_load_eps) for p in parts),
        0.1 * min(n.capacity_eps for n in nodes) / max(max(p.load_eps, w.min_load_eps) for p in parts),
        1.0,
    )
    parts = [PartitionState(p.partition, p.home_region, max(p.load_eps, w.min_load_eps) * scale) for p in parts]
    w = Weights(min_load_eps=0.0)
    plan = make_plan(parts, nodes, LATENCY, w)
    load = {p.partition: p.load_eps for p in parts}
    for n in nodes:
        used = sum(load[p.partition] for p in plan.placements if p.node_id == n.node_id)
        assert used <= w.headroom * n.capacity_eps + 1e-6
    assert not plan.overloaded


@settings(max_examples=100, deadline=None)
@given(parts_st, nodes_st, nodes_st)
def test_moves_are_bounded_and_replanning_settles(parts, nodes, changed) -> None:
    w = Weights(max_moves=3)
    first = make_plan(parts, nodes, LATENCY, w)
    # the same nodes under different power: only paying moves, at most max_moves of them
    shifted = [
        NodeState(n.node_id, n.region, n.capacity_eps, c.renewable_fraction, c.carbon_intensity)
        for n, c in zip(nodes, changed * len(nodes), strict=False)
    ]
    plan, previous = first, first.assignment
    for _ in range(40):
        plan = make_plan(parts, shifted, LATENCY, w, previous=previous)
        assert plan.moves <= w.max_moves
        if plan.moves == 0:
            break
        previous = plan.assignment
    assert plan.moves == 0, "replanning an unchanged lattice must settle"
    assert make_plan(parts, shifted, LATENCY, w, previous=plan.assignment).moves == 0


def node(node_id: str, region: str, carbon: float = 300.0, capacity: float = 1000.0) -> NodeState:
    return NodeState(node_id, region, capacity, 1 - carbon / 700, carbon)


def test_with_equal_power_every_region_serves_its_own_block() -> None:
    plan = make_plan(PARTS, [node("eu-1", "eu"), node("us-1", "us"), node("ap-1", "ap")], LATENCY)
    assert plan.assignment == {p: "eu-1" if p < 4 else "us-1" if p < 8 else "ap-1" for p in range(12)}
    assert all("home region" in p.reason for p in plan.placements)


def test_a_dirty_region_sends_its_work_to_a_green_neighbour_and_takes_it_back() -> None:
    green_us = [node("eu-1", "eu", carbon=650), node("us-1", "us", carbon=30), node("ap-1", "ap")]
    plan = make_plan(PARTS, green_us, LATENCY, Weights(max_moves=100))
    assert all(plan.assignment[p] == "us-1" for p in range(4)), plan.assignment
    assert all(plan.assignment[p] == "ap-1" for p in range(8, 12))  # ap's latency to us is too high
    moved = [p for p in plan.placements if p.partition < 4]
    assert all("40 ms from eu" in p.reason for p in moved)
    # the power turns back: eu's block comes home
    back = make_plan(
        PARTS,
        [node("eu-1", "eu"), node("us-1", "us"), node("ap-1", "ap")],
        LATENCY,
        Weights(max_moves=100),
        previous=plan.assignment,
    )
    assert all(back.assignment[p] == "eu-1" for p in range(4))
    assert back.moves == 4


def test_a_lost_node_hands_its_partitions_over_and_nobody_else_moves() -> None:
    nodes = [node("eu-1", "eu"), node("eu-2", "eu"), node("us-1", "us"), node("ap-1", "ap")]
    before = make_plan(PARTS, nodes, LATENCY)
    after = make_plan(PARTS, [n for n in nodes if n.node_id != "eu-2"], LATENCY, previous=before.assignment)
    lost = {p for p, n in before.assignment.items() if n == "eu-2"}
    assert lost
    assert all(after.assignment[p] == "eu-1" for p in lost)  # the other home node takes them
    assert all(after.assignment[p] == before.assignment[p] for p in range(12) if p not in lost)
    assert all("its node left" in p.reason for p in after.placements if p.partition in lost)


def test_a_small_gain_does_not_pay_for_a_move() -> None:
    first = make_plan(PARTS, [node("eu-1", "eu", 300), node("eu-2", "eu", 300)], LATENCY)
    slightly = [node("eu-1", "eu", 300), node("eu-2", "eu", 290)]  # 10 g better: below hysteresis
    assert make_plan(PARTS, slightly, LATENCY, previous=first.assignment).moves == 0


def test_overload_spreads_load_in_proportion_to_capacity() -> None:
    heavy = [PartitionState(p, "eu", 100.0) for p in range(12)]
    plan = make_plan(heavy, [node("big", "eu", capacity=800), node("small", "eu", capacity=400)], LATENCY)
    assert plan.overloaded
    counts = {n: sum(1 for p in plan.placements if p.node_id == n) for n in ("big", "small")}
    assert counts == {"big": 8, "small": 4}


def test_no_nodes_or_no_partitions_make_an_empty_plan() -> None:
    assert make_plan(PARTS, [], LATENCY).placements == ()
    assert make_plan([], [node("a", "eu")], LATENCY).placements == ()
