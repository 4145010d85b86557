"""`streamlattice simulate`: a day of power and load through the placement code, five policies side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from streamlattice.cli.base import State, pass_state


@click.command()
@click.option("--seed", type=click.IntRange(min=0), help="Draw a scenario from this seed [lattice.toml's regions].")
@click.option("--regions", type=click.IntRange(3, 12), help="Regions of a drawn scenario [3].")
@click.option(
    "--load",
    type=click.FloatRange(0.05, 1.5),
    default=0.6,
    show_default=True,
    help="The lattice's busiest moment of the day, as a share of its capacity.",
)
@click.option("--hours", type=click.FloatRange(min=1), default=24.0, show_default=True, help="Simulated hours.")
@click.option(
    "--latency-budget-ms",
    type=click.FloatRange(min=0),
    default=None,
    help="Farthest (one-way) a partition is served from home while there is room [20].",
)
@click.option(
    "--pause-s",
    type=click.FloatRange(min=0),
    default=None,
    help="Rebalance pause of a planned move [0.8, measured: --measure-pause].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path),
    default=Path("simulation.png"),
    show_default=True,
    help="Where to draw the day.",
)
@click.option("--sweep", is_flag=True, help="Run every load x region count x seed and write a report and a plot.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("docs/simulation"),
    show_default=True,
    help="Where --sweep writes sweep.json and sweep.png.",
)
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, help="Simulations at once (--sweep).")
@click.option(
    "--measure-pause",
    is_flag=True,
    help="Measure the pause of a planned move on live Kafka (three brokers, a worker per region, load) "
    "and write it to --out as pause-MODE.json, instead of simulating.",
)
@click.option(
    "--mode",
    type=click.Choice(["alo", "eos"]),
    default="alo",
    show_default=True,
    help="The workers' delivery mode (--measure-pause).",
)
@click.option(
    "--moves", type=click.IntRange(min=1), default=8, show_default=True, help="Planned moves (--measure-pause)."
)
@pass_state
def simulate(
    state: State,
    seed: int | None,
    regions: int | None,
    load: float,
    hours: float,
    latency_budget_ms: float | None,
    pause_s: float | None,
    as_json: bool,
    png: Path,
    sweep: bool,
    out: Path,
    jobs: int,
    measure_pause: bool,
    mode: str,
    moves: int,
) -> None:
    """Replay a day of power and load through the placement code: Kafka's range assignor, region-local
    sticky (KIP-881), least-loaded, the lattice and the least-carbon oracle, side by side (carbon per
    1,000 inferences as SCI, latency, overload, moves)."""
    if sweep:
        _sweep(state, hours, out, jobs)
        return
    if measure_pause:
        _measure_pause(state, out, mode, moves)
        return
    from dataclasses import replace

    from streamlattice.sim.energy import EnergyModel
    from streamlattice.sim.simulate import LATENCY_BUDGET_MS, run, table

    energy = EnergyModel() if pause_s is None else replace(EnergyModel(), pause_s=pause_s)
    budget = LATENCY_BUDGET_MS if latency_budget_ms is None else latency_budget_ms
    summary = run(state.lattice, seed, load, regions, hours, None if as_json else png, budget, energy)
    click.echo(json.dumps(summary) if as_json else table(summary))
    if not as_json:
        click.echo(f"picture: {png}", err=True)


def _sweep(state: State, hours: float, out: Path, jobs: int) -> None:
    from streamlattice.sim.sweep import aggregate, draw_sweep, sweep

    def progress(one: dict[str, Any]) -> None:
        t = one["targets"]
        click.echo(
            f"regions {one['regions']:>2} load {one['load']:.2f} seed {one['seed']}: "
            f"oracle fraction {t['oracle_fraction']['value']}, p99 x{t['p99_ratio_vs_region_local']['value']}, "
            f"extra overload {t['overload_not_worse']['value']} s",
            err=True,
        )

    report = aggregate(sweep(state.lattice, hours=hours, jobs=jobs, progress=progress))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(report, indent=1) + "\n")
    draw_sweep(report, out / "sweep.png")
    click.echo(f"report: {out / 'sweep.json'}, plot: {out / 'sweep.png'}")


def _measure_pause(state: State, out: Path, mode: str, moves: int) -> None:
    import tempfile

    from streamlattice.chaos.rebalance import measure

    workdir = Path(tempfile.mkdtemp(prefix="streamlattice-pause-"))
    click.echo(f"cluster and logs in {workdir}", err=True)
    report = measure(state.lattice, workdir, mode=mode, moves=moves, progress=lambda m: click.echo(m, err=True))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"pause-{mode}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    p = report["pause_s"]
    click.echo(
        f"planned-move pause ({mode}, {len(report['moves'])} moves): mean over partitions "
        f"{p.get('min')}-{p.get('max')} s "
        f"(median {p.get('median')}); lost {report['verdict']['lost']}; report: {path}"
    )
