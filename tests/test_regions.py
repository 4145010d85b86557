"""Emulated regions: leaders at home, which links a cut takes, what a run measures, the delay
proxy's real delay, and a region cut on real Kafka with nothing lost."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamlattice.chaos.regions import Answer, cut_run, cut_summary, cut_timings, window_stats
from streamlattice.config import load_lattice
from streamlattice.devbroker import broker as dev
from streamlattice.devbroker.regions import Hop, cut_hops
from streamlattice.devbroker.toxiproxy import Link, Toxiproxy
from streamlattice.kafka.topics import home_replicas, lattice_topics

REGIONS = ("eu", "us", "ap")
DISTANCE = {("eu", "us"): 40, ("eu", "ap"): 65, ("us", "ap"): 110}


def distance(a: str, b: str) -> float:
    return 0.0 if a == b else DISTANCE.get((a, b), DISTANCE.get((b, a), 0.0))


# ---- leaders at home -------------------------------------------------------------------------


def test_each_partition_is_led_from_its_home_region_with_followers_elsewhere_nearest_first() -> None:
    racks = {1: "eu", 2: "us", 3: "ap"}
    homes = ["eu"] * 2 + ["us"] * 2 + ["ap"] * 2
    placed = home_replicas(homes, racks, 3, distance)
    assert placed is not None
    for p, home in enumerate(homes):
        leader, *followers = placed[p]
        assert racks[leader] == home
        assert sorted(placed[p]) == [1, 2, 3]
        assert [distance(home, racks[f]) for f in followers] == sorted(distance(home, racks[f]) for f in followers)
    # replication 2: the follower is the nearest other region
    two = home_replicas(homes, racks, 2, distance)
    assert two is not None
    assert [racks[f] for _, f in two.values()] == ["us", "us", "eu", "eu", "eu", "eu"]


def test_a_region_with_several_brokers_spreads_its_partitions_and_keeps_followers_out_of_it() -> None:
    racks = {1: "eu", 2: "eu", 3: "us", 4: "us"}
    placed = home_replicas(["eu"] * 4 + ["us"] * 4, racks, 2, distance)
    assert placed is not None
    assert {placed[p][0] for p in range(4)} == {1, 2} and {placed[p][0] for p in range(4, 8)} == {3, 4}
    assert all(racks[placed[p][1]] != racks[placed[p][0]] for p in range(8))


def test_without_racks_for_every_region_kafka_places_the_replicas() -> None:
    assert home_replicas(["eu", "us"], {1: None, 2: None, 3: None}, 3, distance) is None
    assert home_replicas(["eu", "ap"], {1: "eu", 2: "us"}, 2, distance) is None
    assert home_replicas([], {1: "eu"}, 1, distance) is None


def test_the_lattice_topics_know_each_partitions_home() -> None:
    lattice = load_lattice()
    specs = {s.name: s for s in lattice_topics(lattice)}
    events = specs[lattice.events_topic("sensor")]
    assert events.homes == tuple(lattice.region_of_partition(p).name for p in range(lattice.total_partitions))
    assert specs[lattice.placement_topic].homes == ()


# ---- what a cut takes ------------------------------------------------------------------------


def all_hops() -> list[Hop]:
    hops = [Hop(role, src, dst) for role in ("dc", "edge") for src in REGIONS for dst in REGIONS]
    hops += [Hop(role, a, b) for role in ("broker", "controller") for a in REGIONS for b in REGIONS if a != b]
    return hops


def test_a_cut_isolates_the_regions_data_centre_and_leaves_its_users_the_other_regions() -> None:
    cut = set(cut_hops(all_hops(), "ap"))
    # nothing reaches ap's broker from outside, nor its users
    assert Hop("edge", "ap", "ap") in cut and Hop("edge", "eu", "ap") in cut and Hop("dc", "us", "ap") in cut
    assert Hop("broker", "eu", "ap") in cut and Hop("controller", "us", "ap") in cut
    # ap's broker and servers reach nothing outside
    assert Hop("broker", "ap", "eu") in cut and Hop("dc", "ap", "us") in cut
    # ap's servers keep their own broker; ap's users keep the other regions; others are untouched
    assert Hop("dc", "ap", "ap") not in cut
    assert Hop("edge", "ap", "eu") not in cut and Hop("edge", "ap", "us") not in cut
    assert Hop("broker", "eu", "us") not in cut and Hop("dc", "eu", "eu") not in cut
    assert len(cut) == 15


# ---- what a run measures ---------------------------------------------------------------------


def test_window_stats_count_unanswered_events_as_failures_and_duplicates_once() -> None:
    published = {"a": ("eu", 1_000_000), "b": ("eu", 1_500_000), "c": ("us", 1_200_000), "late": ("eu", 9_000_000)}
    answers = [
        Answer("a", "eu", "eu-0", 1_000_000, 1_100_000),
        Answer("a", "eu", "us-1", 1_000_000, 1_900_000),  # a duplicate, later: the first counts
        Answer("c", "us", "us-1", 1_200_000, 1_500_000),
    ]
    stats = window_stats(published, answers, 0, 2_000_000, ["eu", "us"])
    assert stats["eu"]["answered"] == 1 and stats["eu"]["unanswered"] == 1 and stats["eu"]["p50_ms"] == 100.0
    assert stats["us"]["p99_ms"] == 300.0
    assert stats["all"]["answered"] == 2 and stats["all"]["unanswered"] == 1


def test_cut_timings_find_when_a_region_was_served_elsewhere_and_when_it_came_home() -> None:
    nodes = {"ap-0": "ap", "eu-0": "eu"}
    cut, heal = 10_000_000, 20_000_000
    # (event id, event region, node, event time, received, consumed, produced)
    answers = [
        Answer("1", "ap", "ap-0", 9_000_000, 9_500_000, 9_100_000, 9_200_000),
        # produced from eu 4 s after the cut; ap's users received it 7 s after the cut
        Answer("2", "ap", "eu-0", 10_000_000, 17_000_000, 13_900_000, 14_000_000),
        Answer("3", "ap", "eu-0", 19_000_000, 21_000_000, 20_500_000, 21_000_000),  # still eu after the heal
        Answer("4", "ap", "ap-0", 22_000_000, 23_200_000, 22_900_000, 23_000_000),  # home from here: 3 s
        Answer("5", "ap", "ap-0", 24_000_000, 24_500_000, 24_300_000, 24_400_000),
        Answer("6", "eu", "eu-0", 24_000_000, 24_100_000, 24_050_000, 24_060_000),  # another region's
    ]
    assert cut_timings(answers, nodes, "ap", cut, heal) == {
        "served_elsewhere_s": 4.0,
        "seen_elsewhere_s": 7.0,
        "home_again_s": 3.0,
    }
    never = cut_timings(answers[:3], nodes, "ap", cut, heal)
    assert never["home_again_s"] is None


# ---- the delay proxy -------------------------------------------------------------------------


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A TCP echo server on a free port."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    server.close()


def round_trip_ms(port: int, sock: socket.socket | None = None) -> float:
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.perf_counter()
    s.sendall(b"ping")
    assert s.recv(16) == b"ping"
    return (time.perf_counter() - started) * 1000


@pytest.mark.timeout(120)
def test_toxiproxy_delays_each_way_by_the_links_latency_and_a_cut_carries_nothing_until_healed(
    tmp_path: Path, echo_server: int
) -> None:
    proxy = Toxiproxy(dev.free_port(), tmp_path / "toxiproxy.log")
    proxy.start()
    try:
        near, far = dev.free_port(), dev.free_port()
        upstream = f"127.0.0.1:{echo_server}"
        proxy.add([Link("near", f"127.0.0.1:{near}", upstream, 0), Link("far", f"127.0.0.1:{far}", upstream, 40)])
        sock = socket.create_connection(("127.0.0.1", far), timeout=5)
        far_ms = sorted(round_trip_ms(far, sock) for _ in range(5))[2]
        near_ms = sorted(round_trip_ms(near) for _ in range(5))[2]
        assert 80 <= far_ms < 130, far_ms  # 40 ms each way
        assert near_ms < 20, near_ms
        proxy.cut(["far"])
        sock.settimeout(1.0)
        sock.sendall(b"ping")
        with pytest.raises(TimeoutError):  # a blackhole: nothing comes back, nothing is refused
            sock.recv(16)
        assert near_ms < 20 and round_trip_ms(near) < 20  # the other link is untouched
        proxy.heal(["far"])
        assert 80 <= round_trip_ms(far) < 130  # a new connection, delayed as before
    finally:
        proxy.stop()


# ---- a region cut on real Kafka --------------------------------------------------------------


@pytest.mark.timeout(600)
def test_a_region_cut_is_served_elsewhere_with_nothing_lost_and_comes_home(tmp_path: Path) -> None:
    lattice = load_lattice()
    region = lattice.regions[-1].name
    report = cut_run(
        lattice, tmp_path, region, rate=45.0, before_s=20.0, cut_s=60.0, after_s=70.0, settle_s=60.0, progress=print
    )
    print(cut_summary(report))
    (tmp_path / "cut.json").write_text(json.dumps(report, indent=1))
    verdict = report["verdict"]
    assert report["published"] > 0.9 * 45.0 * 150
    assert verdict["lost"] == 0, verdict
    assert report["crashed"] == []
    # while cut, its users' events reach the other regions and are answered there
    assert report["served_elsewhere_s"] is not None and report["served_elsewhere_s"] < report["cut_s"]
    assert report["during"][region]["answered"] > 0
    # and once the links are back, they come home: served there, led from there
    assert report["home_again_s"] is not None
    assert report["leaders_home_at_end"]
    # every event of the other regions was answered throughout
    assert report["after"]["all"]["unanswered"] == 0
