"""Chaos schedules and the checker's timeline: pure, no broker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamlattice.chaos.checker import Timeline
from streamlattice.chaos.schedule import DOWN_S, KINDS, PLAIN_KINDS, REGION_KINDS, Fault, Schedule, draw


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10_000), minutes=st.floats(1, 40), every=st.floats(10, 120))
def test_a_seed_draws_the_same_schedule_and_faults_stay_apart_inside_the_run(
    seed: int, minutes: float, every: float
) -> None:
    a = draw(seed, minutes, "eos", 50.0, every)
    assert a == draw(seed, minutes, "eos", 50.0, every)
    assert Schedule.from_json(a.to_json()) == a
    assert Schedule.from_json({"schedule": a.to_json()}) == a  # a report replays too
    previous_end = 0.0
    for f in a.faults:
        low, high = DOWN_S[f.kind]
        assert low <= f.down_s <= high
        assert f.at_s >= 15.0 and f.at_s + f.down_s <= minutes * 60 - 15.0
        assert f.at_s >= previous_end + (15.0 - 1e-6 if previous_end else 0.0)
        previous_end = f.at_s + f.down_s


def test_seeds_draw_every_kind_of_fault_and_a_region_cut_only_when_asked() -> None:
    drawn = {f.kind for seed in range(20) for f in draw(seed, 10, every_s=30).faults}
    assert drawn == set(PLAIN_KINDS) and not drawn & set(REGION_KINDS)  # a plain cluster has no regions to cut
    drawn = {f.kind for seed in range(20) for f in draw(seed, 10, every_s=30, kinds=KINDS).faults}
    assert drawn == set(KINDS)


def test_a_region_cut_is_refused_without_emulated_regions_before_anything_starts(tmp_path) -> None:
    from click.testing import CliRunner

    from streamlattice.chaos.run import run
    from streamlattice.cli import cli
    from streamlattice.config import load_lattice

    schedule = Schedule(1, 1.0, "alo", 10.0, (Fault(20.0, "region_cut", 0, 20.0),))
    with pytest.raises(ValueError, match="needs emulated regions"):
        run(schedule, load_lattice(), ["sensor"], tmp_path)
    assert not (tmp_path / "kafka").exists()  # refused before a broker started
    result = CliRunner().invoke(cli, ["chaos", "--kinds", "region_cut", "--minutes", "2", "--dry-run"])
    assert result.exit_code == 2 and "add --regions-emulated" in result.output, result.output
    result = CliRunner().invoke(cli, ["chaos", "--regions-emulated", "--tasks", "sensor,vision", "--dry-run"])
    assert result.exit_code == 2 and "one task" in result.output, result.output
    result = CliRunner().invoke(cli, ["chaos", "--regions-emulated", "--seed", "0-9", "--minutes", "10", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "region_cut" in result.output  # drawn from every kind once the regions are there


def test_bad_schedules_are_refused_with_what_is_known() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Schedule.from_json(
            {
                "seed": 1,
                "minutes": 1,
                "mode": "alo",
                "rate": 1,
                "faults": [{"at_s": 1, "kind": "x", "target": 0, "down_s": 1}],
            }
        )
    with pytest.raises(ValueError, match="mode"):
        draw(1, 1, mode="twice")


def test_recovery_is_the_time_until_the_waiting_events_are_back_under_the_bound_for_good() -> None:
    s = 1_000_000
    published = np.arange(0, 60 * s, s // 10)  # 10 events/s for a minute
    answered = published + s // 100  # answered 10 ms later...
    stalled = (published >= 10 * s) & (published < 20 * s)
    answered[stalled] = 25 * s  # ...except those of 10-20 s, answered at 25 s
    timeline = Timeline(published, np.sort(answered))
    seconds, recovered = timeline.recovery_s(10 * s, 40 * s, bound=20)
    assert recovered and 14.9 <= seconds <= 15.2  # over 20 waiting from 12 s to 25 s
    assert timeline.recovery_s(30 * s, 40 * s, bound=20) == (0.0, True)
    assert timeline.recovery_s(10 * s, 22 * s, bound=20)[1] is False  # still over at the next fault


def report(
    seed: int, mode: str, lost: int, dups: int, faults: list[tuple[str, float, bool]], minutes: float = 1.5, growth=0.0
) -> dict:
    rss = {
        "minutes": minutes - 2,
        "first_mb": 100.0,
        "last_mb": 100.0 * (1 + growth),
        "growth": growth,
        "slope_mb_per_min": growth * 5,
    }
    return {
        "schedule": {"seed": seed, "mode": mode, "minutes": minutes},
        "verdict": {"published": 100, "lost": lost, "duplicated": dups, "order_violations": 0, "lag": {}},
        "faults": [{"kind": k, "recovery_s": r, "recovered": ok} for k, r, ok in faults],
        "workers": {"w": {"peak_rss_mb": 120.0, "rss": rss}},
        "crashed": [],
    }


def test_the_summary_judges_each_target_from_every_run() -> None:
    from streamlattice.chaos.run import markdown

    good = markdown([report(0, "alo", 0, 3, [("worker_kill", 12.0, True)]), report(1, "eos", 0, 0, [])])
    assert "| lost = 0 on every seed, both modes | 0 lost over 2 runs | met |" in good
    assert "| recovery after a worker SIGKILL <= 20 s | 1 faults, 12.0-12.0 s (median 12.0) | met |" in good
    assert "leader broker SIGKILL <= 30 s | none drawn | not measured (none drawn) |" in good
    bad = markdown([report(0, "eos", 2, 1, [("broker_leader_kill", 45.0, False)])])
    assert "| 2 lost over 1 runs | **missed** |" in bad
    assert "1 duplicates, 0 order violations in 1 runs | **missed** |" in bad
    assert "45.0-45.0 s (median 45.0) | **missed** |" in bad
    assert "| 1 faults not recovered before the next | **missed** |" in bad
    assert "proves nothing) | 0 failed | met |" in good
    failed_load = markdown([{**report(3, "alo", 0, 0, []), "load_error": "TopicMissing(...)"}])
    assert "proves nothing) | 1 failed | **missed** |" in failed_load
    assert "RSS growth after warm-up < 10%, worker processes that lived 10+ min | no soak run | not measured" in good
    leaking = markdown([report(2, "alo", 0, 0, [], minutes=30, growth=0.12)])
    assert "1 processes in 1 runs, worst growth 12.0%" in leaking and "| **missed** |" in leaking
    steady = markdown([report(2, "alo", 0, 0, [], minutes=30, growth=0.02)])
    assert "1 processes in 1 runs, worst growth 2.0%, slopes +0.10 to +0.10 MB/min | met |" in steady


def test_a_run_without_faults_has_no_recoveries_and_the_lag_trend_shows_a_backlog_that_grows() -> None:
    s = 1_000_000
    published = np.arange(0, 600 * s, s // 10, dtype=np.int64)  # 10 events/s for 10 minutes
    keeping_up = Timeline(published, published + s // 100)
    assert keeping_up.recoveries([], 600 * s, bound=20) == []
    steady = keeping_up.trend(600 * s)
    assert steady["max"] <= 1 and abs(steady["slope_per_min"]) < 0.1
    slow = Timeline(published, np.sort(published[::2] * 2))  # every other event, answered at 2.5/s
    growing = slow.trend(600 * s)
    assert 400 <= growing["slope_per_min"] <= 500 and growing["last"] >= 4400  # 7.5 events/s behind
    assert Timeline(published[:0], published[:0]).trend(600 * s) == {}


def test_rss_growth_is_taken_over_the_longest_lived_process_not_across_restarts() -> None:
    from streamlattice.chaos.run import rss_growth

    first = [(float(t), 100.0 + t / 60, 1, 4) for t in range(0, 300)]  # grows 1 MB/min, then killed
    # a fresh process, flat for 20 minutes; it takes two more partitions 10 minutes in
    second = [(float(t), 80.0, 2, 3 if t < 900 else 5) for t in range(300, 1500)]
    growth = rss_growth(first + second, warm_up_s=60)
    assert growth is not None and growth["minutes"] >= 18 and growth["growth"] == 0.0
    assert growth["slope_mb_per_min"] == 0.0
    assert (growth["partitions_first"], growth["partitions_last"], growth["partitions_max"]) == (3, 5, 5)
    assert rss_growth(first[:50], warm_up_s=60) is None  # nothing after its warm-up


def test_the_partitions_a_worker_holds_are_read_from_its_last_logged_assignment(tmp_path: Path) -> None:
    from streamlattice.chaos.run import Proc

    log = tmp_path / "w.log"
    proc = Proc("w", [], log)
    assert proc.partitions_held() == 0  # no log yet
    log.write_text("node w assigned partitions [0, 3, 7] (ready in 0.01s)\nnode w: rebalance: drained\n")
    assert proc.partitions_held() == 3
    with log.open("a") as f:
        f.write("node w assigned partitions [] (ready in 0.00s)\nnode w assigned partitions [1, 2")  # a half line
    assert proc.partitions_held() == 0
    with log.open("a") as f:
        f.write("] (ready in 0.02s)\n")
    assert proc.partitions_held() == 2
    assert proc.partitions_held() == 2  # nothing new: the same count


def test_the_checker_waits_for_the_router_to_heal_a_hanging_transaction_before_it_judges() -> None:
    from streamlattice.chaos.run import HEALED_WITHIN_S, settled
    from streamlattice.router.app import HANGING_AFTER_S, HEAL_EVERY_S

    # the router aborts a hanging transaction at most HANGING_AFTER_S + HEAL_EVERY_S after its last write
    assert HEALED_WITHIN_S > HANGING_AFTER_S + HEAL_EVERY_S
    assert settled(lost=0, held_open=0, now=1.0, settle_by=90.0, healed_by=165.0)
    assert not settled(lost=5, held_open=0, now=60.0, settle_by=90.0, healed_by=165.0)
    assert settled(lost=5, held_open=0, now=91.0, settle_by=90.0, healed_by=165.0)  # lost, and no hang to wait for
    assert not settled(lost=5, held_open=2, now=91.0, settle_by=90.0, healed_by=165.0)  # the router may still heal it
    assert settled(lost=5, held_open=2, now=166.0, settle_by=90.0, healed_by=165.0)
    assert not settled(lost=5, held_open=2, now=200.0, settle_by=300.0, healed_by=165.0)  # never sooner than asked
