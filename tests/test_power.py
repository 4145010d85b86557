"""Power sources: profiles follow the sun and the clock, CSV and HTTP feeds read right."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from streamlattice.errors import ConfigError
from streamlattice.power.energy import EnergyMeter, PowerModel, grams
from streamlattice.power.feeds import CsvSource, HttpSource
from streamlattice.power.profiles import Clock, Grid, Solar, Static, Wind
from streamlattice.power.sources import parse_power

REPO = Path(__file__).resolve().parents[1]
DAY = datetime(2026, 6, 21, tzinfo=UTC).timestamp()


def at(hour: float) -> float:
    return DAY + hour * 3600


def test_solar_follows_the_sun_of_its_time_zone() -> None:
    london, delhi = Solar(tz_hours=0, clouds=0), Solar(tz_hours=5.5, clouds=0)
    assert london.read(at(12)).renewable_fraction > 0.8 and london.read(at(0)).renewable_fraction < 0.1
    assert london.read(at(12)).carbon_intensity < london.read(at(0)).carbon_intensity
    assert delhi.read(at(6.5)).renewable_fraction > 0.8  # noon in Delhi is 06:30 UTC
    assert Solar(clouds=0.9).read(at(12)).renewable_fraction <= london.read(at(12)).renewable_fraction


def test_grid_carbon_peaks_in_the_evening_and_wind_stays_in_its_band() -> None:
    g = Grid()
    assert g.read(at(16)).carbon_intensity > g.read(at(4)).carbon_intensity
    shares = [Wind(seed=3).read(at(h / 4)).renewable_fraction for h in range(96)]
    assert all(0.15 <= s <= 0.8 for s in shares) and max(shares) - min(shares) > 0.1


def test_an_accelerated_clock_runs_a_day_in_minutes() -> None:
    clock = Clock(factor=720, start=1000.0, origin=DAY)
    assert clock.now(1000.0) == DAY
    assert clock.now(1000.0 + 120) == DAY + 24 * 3600  # two minutes of wall time, a day of power
    assert Clock().now(1234.5) == 1234.5


def test_the_sample_csv_interpolates_and_loops() -> None:
    csv = CsvSource(REPO / "workers" / "power" / "sample_day.csv")
    noon, night = csv.read(at(12)), csv.read(at(2))
    assert noon.renewable_fraction > night.renewable_fraction
    half = csv.read(at(12.5))
    assert min(noon.carbon_intensity, csv.read(at(13)).carbon_intensity) <= half.carbon_intensity
    assert csv.read(at(12 + 24)) == noon  # replayed the next day


def test_bad_specs_and_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown power source"):
        parse_power("nuclear")
    with pytest.raises(ConfigError, match="name=number"):
        parse_power("solar:clouds")
    bad = tmp_path / "p.csv"
    bad.write_text("time,renewable\n1,0.5\n")
    with pytest.raises(ConfigError, match="renewable_fraction"):
        parse_power(f"csv:{bad}")
    assert isinstance(parse_power("static:renewable=0.9,carbon=40"), Static)
    assert parse_power("static:renewable=0.9,carbon=40").read(0).carbon_intensity == 40


def test_the_http_feed_is_read_and_its_last_value_kept_when_it_fails() -> None:
    reading = {"renewable_fraction": 0.7, "carbon_intensity": 120.0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(reading).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = parse_power(f"http://127.0.0.1:{server.server_address[1]}/eu", 0)
    assert isinstance(source, HttpSource)
    source.ttl_s = 0
    assert source.read(0).carbon_intensity == 120.0
    server.shutdown()
    server.server_close()
    assert source.read(0).carbon_intensity == 120.0  # the feed is gone: the last good reading stays


def test_energy_counts_the_whole_process_cpu_and_the_idle_draw_of_the_cpus_it_is_given() -> None:
    cpu, wall = [10.0], [100.0]
    meter = EnergyMeter(PowerModel(idle_watts=1.0, busy_watts=4.0, cpus=2.0), lambda: cpu[0], lambda: wall[0])
    cpu[0], wall[0] = 10.5, 101.0  # half a CPU-second in one second
    assert meter.take() == pytest.approx(2 * 1.0 * 1.0 + 0.5 * 3.0)
    wall[0] = 111.0  # ten seconds idle: only the idle draw
    assert meter.take() == pytest.approx(2 * 1.0 * 10.0)
    assert meter.take() == 0.0
    cpu[0], wall[0] = 20.0, 200.0
    meter.restart()  # e.g. after loading the model: nothing before counts
    cpu[0], wall[0] = 21.0, 201.0
    assert meter.take() == pytest.approx(2.0 + 3.0)
    # 1 kWh at 500 gCO2/kWh
    assert grams(3.6e6, 500.0) == pytest.approx(500.0)


def test_a_power_model_that_cannot_be_is_refused() -> None:
    with pytest.raises(ValueError, match="idle_watts <= busy_watts"):
        PowerModel(idle_watts=5.0, busy_watts=1.0)
    with pytest.raises(ValueError, match="cpus > 0"):
        PowerModel(cpus=0.0)


def test_a_workers_power_model_comes_from_nodes_its_options_and_its_tasks_own_watts() -> None:
    from dataclasses import replace

    from streamlattice.config import DEFAULT_CONFIG, load_lattice
    from streamlattice.kafka.clients import KafkaSettings
    from streamlattice.worker.runtime import Worker

    lattice = load_lattice(DEFAULT_CONFIG)
    settings = KafkaSettings(bootstrap="localhost:1")  # nothing is connected before run()
    assert Worker(lattice, "sensor", "eu-west", "n", settings).energy.model == lattice.power_model
    mine = PowerModel(idle_watts=2.0, busy_watts=9.0, cpus=0.5)
    assert Worker(lattice, "sensor", "eu-west", "n", settings, power_model=mine).energy.model == mine
    accelerated = lattice.with_task(replace(lattice.task("sensor"), watts=40.0))
    w = Worker(accelerated, "sensor", "eu-west", "n", settings, power_model=mine)
    assert w.energy.model == PowerModel(idle_watts=2.0, busy_watts=40.0, cpus=0.5)
