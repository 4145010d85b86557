"""The router's decisions: live nodes, arrival rates, and when a plan is published."""

from __future__ import annotations

from pathlib import Path

from streamlattice.config import DEFAULT_CONFIG, load_lattice
from streamlattice.placement.plan import NodeState
from streamlattice.router.decisions import OffsetRates, TaskRouting, live_nodes
from streamlattice.wire.records import Heartbeat, PublishedPlan

LATTICE = load_lattice(DEFAULT_CONFIG)


def hb(node: str, region: str, t: int, stopping: bool = False, task: str = "sensor") -> Heartbeat:
    return Heartbeat(
        node_id=node,
        task=task,
        region=region,
        capacity_eps=1000.0,
        load_eps=10.0,
        lag=0,
        partitions=(),
        partition_load_eps={},
        mean_batch=1.0,
        providers=("CPUExecutionProvider",),
        model_version="v",
        renewable_fraction=0.5,
        carbon_intensity=300.0,
        power_source="grid",
        time_us=t,
        stopping=stopping,
    )


def test_a_heartbeat_goes_through_its_schema_and_back() -> None:
    beat = hb("a", "eu-west", 123)
    beat = Heartbeat(**{**beat.__dict__, "partitions": (1, 3), "partition_load_eps": {1: 2.5, 3: 0.0}})
    assert Heartbeat.decode(beat.encode()) == beat


def test_only_recent_heartbeats_of_the_task_from_nodes_that_stay_count() -> None:
    now = 100_000_000
    beats = [
        hb("a", "eu-west", now - 1_000_000),
        hb("b", "us-east", now - 20_000_000),
        hb("c", "ap-south", now, stopping=True),
        hb("d", "eu-west", now, task="vision"),
    ]
    assert [n.node_id for n in live_nodes(beats, "sensor", now, timeout_s=10)] == ["a"]


def test_a_node_whose_heartbeats_stall_stays_live_while_its_group_still_counts_it() -> None:
    """A broker failover stops a node's heartbeats for a while; its group session says it lives."""
    now = 100_000_000
    beats = [hb("a", "eu-west", now), hb("b", "us-east", now - 20_000_000), hb("c", "ap-south", now - 20_000_000)]
    live = live_nodes(beats, "sensor", now, timeout_s=10, members=frozenset({"a", "b"}))
    assert [n.node_id for n in live] == ["a", "b"]  # c is out of the group too: gone
    assert [n.node_id for n in live_nodes(beats, "sensor", now, timeout_s=10, members=None)] == ["a"]
    leaving = [hb("b", "us-east", now - 20_000_000, stopping=True)]
    assert live_nodes(leaving, "sensor", now, timeout_s=10, members=frozenset({"b"})) == []


def test_arrival_rates_come_from_end_offset_deltas() -> None:
    rates = OffsetRates(smoothing=1.0)
    rates.observe({0: 100, 1: 0}, at=10.0)
    rates.observe({0: 300, 1: 50}, at=12.0)
    assert rates.rates == {0: 100.0, 1: 25.0}


def test_a_changed_plan_gets_the_next_epoch_and_an_unchanged_one_is_only_refreshed() -> None:
    routing = TaskRouting("sensor")
    nodes = [NodeState(f"{r.name}-1", r.name, 1000, 0.5, 300) for r in LATTICE.regions]
    first = routing.decide(LATTICE, nodes, {}, refresh_s=5, now=0.0)
    assert first is not None and first.epoch == 1
    assert routing.decide(LATTICE, nodes, {}, refresh_s=5, now=1.0) is None  # nothing new, not due
    again = routing.decide(LATTICE, nodes, {}, refresh_s=5, now=6.0)
    assert again is not None and again.epoch == 1 and again.created_us >= first.created_us
    greener = [NodeState("us-east-1", "us-east", 1000, 0.95, 30)] + [n for n in nodes if n.region != "us-east"]
    dirty_eu = [NodeState("eu-west-1", "eu-west", 1000, 0.05, 680)] + [n for n in greener if n.region != "eu-west"]
    hold = LATTICE.settings.plan_hold_s
    moved = routing.decide(LATTICE, dirty_eu, {}, refresh_s=5, now=hold + 1)
    assert moved is not None and moved.epoch == 2 and moved.moves > 0
    assert routing.decide(LATTICE, [], {}, refresh_s=5, now=hold + 2) is None  # no live node: no plan


def test_a_change_that_only_improves_placement_waits_but_a_lost_node_is_followed_at_once() -> None:
    routing = TaskRouting("sensor")
    hold = LATTICE.settings.plan_hold_s
    nodes = [NodeState(f"{r.name}-1", r.name, 1000, 0.5, 300) for r in LATTICE.regions]
    first = routing.decide(LATTICE, nodes, {}, refresh_s=5, now=0.0)
    assert first is not None and first.epoch == 1
    # eu-west's grid turns dirty right after: moving away would help, but the last change is recent
    dirty_eu = [NodeState("eu-west-1", "eu-west", 1000, 0.05, 680)] + [n for n in nodes if n.region != "eu-west"]
    assert routing.decide(LATTICE, dirty_eu, {}, refresh_s=5, now=1.0) is None
    refreshed = routing.decide(LATTICE, dirty_eu, {}, refresh_s=5, now=6.0)  # the held plan, refreshed
    assert refreshed is not None and refreshed.epoch == 1 and refreshed.assignment == first.assignment
    assert routing.held == 2
    later = routing.decide(LATTICE, dirty_eu, {}, refresh_s=5, now=hold + 0.5)
    assert later is not None and later.epoch == 2 and later.assignment != first.assignment
    # a node lost right after that change: its partitions move at once
    gone = [n for n in dirty_eu if n.node_id != "us-east-1"]
    lost = routing.decide(LATTICE, gone, {}, refresh_s=5, now=hold + 1.0)
    assert lost is not None and lost.epoch == 3 and "us-east-1" not in lost.assignment.values()


def test_a_node_that_comes_back_waits_for_the_hold_unless_a_node_is_over_capacity() -> None:
    hold = LATTICE.settings.plan_hold_s
    nodes = [NodeState(f"{r.name}-1", r.name, 1000, 0.5, 300) for r in LATTICE.regions]
    loads = {p: 20.0 for p in range(LATTICE.total_partitions)}
    routing = TaskRouting("sensor")
    assert routing.decide(LATTICE, nodes, loads, refresh_s=5, now=0.0) is not None
    # ap-south's node crashes: its block moves at once
    survivors = [n for n in nodes if n.region != "ap-south"]
    crashed = routing.decide(LATTICE, survivors, loads, refresh_s=5, now=1.0)
    assert crashed is not None and crashed.epoch == 2 and "ap-south-1" not in crashed.assignment.values()
    # it comes back 5 s later while the others drain the backlog: its block goes home after the hold
    back = routing.decide(LATTICE, nodes, loads, refresh_s=5, now=6.0)
    assert back is not None and back.epoch == 2 and back.assignment == crashed.assignment
    home = routing.decide(LATTICE, nodes, loads, refresh_s=5, now=1.0 + hold + 0.5)
    assert home is not None and home.epoch == 3
    assert {home.assignment[p] for p in LATTICE.region("ap-south").block} == {"ap-south-1"}

    # a scale-out while a node is over its capacity: the new node is used at once
    routing = TaskRouting("sensor")
    small = [NodeState("eu-west-1", "eu-west", 100, 0.5, 300)]
    busy = {p: 50.0 for p in range(LATTICE.total_partitions)}  # 600 events/s on a 100 events/s node
    assert routing.decide(LATTICE, small, busy, refresh_s=5, now=0.0) is not None
    bigger = [*small, NodeState("eu-west-2", "eu-west", 1000, 0.5, 300)]
    out = routing.decide(LATTICE, bigger, busy, refresh_s=5, now=1.0)
    assert out is not None and out.epoch == 2 and "eu-west-2" in out.assignment.values()


def test_a_restarted_router_continues_the_epochs(tmp_path: Path) -> None:
    old = TaskRouting("sensor")
    nodes = [NodeState(f"{r.name}-1", r.name, 1000, 0.5, 300) for r in LATTICE.regions]
    published = old.decide(LATTICE, nodes, {}, refresh_s=5, now=0.0)
    assert published is not None
    fresh = TaskRouting("sensor")
    fresh.recover(PublishedPlan.decode(published.encode()))
    assert fresh.epoch == 1 and fresh.assignment == published.assignment
    assert fresh.decide(LATTICE, nodes, {}, refresh_s=5, now=0.0) is None or fresh.epoch == 1


def test_recommended_replicas_follow_arrival_lag_and_capacity() -> None:
    from streamlattice.router.decisions import recommend_replicas, recommendations

    assert recommend_replicas(0, 0, 1000, 0.8) == 0  # no traffic, no worker needed
    assert recommend_replicas(10, 0, 1000, 0.8) == 1
    assert recommend_replicas(2000, 0, 1000, 0.8) == 3  # 2000 / 800 -> 2.5 -> 3
    assert recommend_replicas(0, 120_000, 1000, 0.8) == 3  # a backlog drained within a minute
    nodes = [NodeState("eu-1", "eu-west", 500, 0.5, 300), NodeState("us-1", "us-east", 2000, 0.5, 300)]
    rates = {p: 300.0 for p in range(4)} | {p: 100.0 for p in range(4, 8)}
    recs = {r.region: r for r in recommendations(LATTICE, nodes, rates, {8: 0})}
    assert recs["eu-west"].replicas == 3 and recs["eu-west"].capacity_eps == 500  # 1200 / 400
    assert recs["us-east"].replicas == 1
    assert recs["ap-south"].replicas == 0 and recs["ap-south"].capacity_eps == 1250  # the task's mean


def test_the_router_exports_the_recommended_replicas_per_region() -> None:
    from streamlattice.metrics import RouterMetrics
    from streamlattice.router.decisions import recommendations

    metrics = RouterMetrics()
    nodes = [NodeState("eu-1", "eu-west", 500, 0.5, 300)]
    metrics.recommend("sensor", recommendations(LATTICE, nodes, {p: 300.0 for p in range(4)}, {}))
    sample = metrics.registry.get_sample_value
    name = "streamlattice_router_recommended_replicas"
    assert sample(name, {"task": "sensor", "region": "eu-west"}) == 3  # 1200 events/s on 400 each
    assert sample(name, {"task": "sensor", "region": "ap-south"}) == 0  # no traffic
    metrics.recommend("sensor", recommendations(LATTICE, nodes, {}, {0: 60_000}))  # a backlog only
    assert sample(name, {"task": "sensor", "region": "eu-west"}) == 3  # drained within a minute
