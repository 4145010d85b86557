"""`streamlattice regions`: the lattice's regions emulated on this machine, with real delay."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from streamlattice.cli.base import State, pass_state


@click.group()
def regions() -> None:
    """Emulate lattice.toml's regions on this machine: a Kafka broker per region (broker.rack), leaders
    at home, and every hop between regions delayed
    by its latency_ms through Toxiproxy (built once with `go install`)."""


def _workdir(workdir: Path | None, what: str) -> Path:
    path = workdir or Path(tempfile.mkdtemp(prefix=f"streamlattice-{what}-"))
    click.echo(f"brokers, proxies and logs in {path}", err=True)
    return path


@regions.command("measure")
@click.option(
    "--repeats", type=click.IntRange(1), default=2, show_default=True, help="Runs per placement and replication."
)
@click.option("--seconds", type=float, default=60.0, show_default=True, help="Measured seconds per run.")
@click.option("--warmup", type=float, default=20.0, show_default=True, help="Seconds of load before measuring.")
@click.option("--rate", type=float, default=90.0, show_default=True, help="Events/s, over all regions.")
@click.option("--task", default="sensor", show_default=True, help="The task whose events are served.")
@click.option(
    "--replication",
    default="3,2",
    show_default=True,
    help="Replication factors to run: 3 (a replica in every region) and/or 2 (the leader's nearest region).",
)
@click.option("--output", type=click.Path(path_type=Path), help="Write the report: NAME.json and NAME.md.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where brokers and logs go [a temp dir, kept].")
@pass_state
def regions_measure(
    state: State,
    repeats: int,
    seconds: float,
    warmup: float,
    rate: float,
    task: str,
    replication: str,
    output: Path | None,
    workdir: Path | None,
) -> None:
    """End-to-end latency with each region's events served at home (leaders and workers in their
    region) against the same load served from the first region; producers and subscribers stay in
    their regions. Alternates the two, fresh regions each run."""
    from streamlattice.chaos.regions import compare, markdown

    state.lattice.task(task)
    rfs = tuple(int(x) for x in replication.split(","))
    report = compare(
        state.lattice,
        _workdir(workdir, "regions"),
        repeats=repeats,
        replications=rfs,
        progress=lambda m: click.echo(m, err=True),
        task=task,
        rate=rate,
        seconds=seconds,
        warmup_s=warmup,
    )
    table = markdown(report)
    click.echo(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        output.with_suffix(".md").write_text(table)
        click.echo(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}", err=True)


@regions.command("cut")
@click.option("--region", help="The region whose links are cut [the last in lattice.toml].")
@click.option("--before", type=float, default=30.0, show_default=True, help="Seconds of load before the cut.")
@click.option("--cut", "cut_s", type=float, default=60.0, show_default=True, help="Seconds the links stay cut.")
@click.option("--after", type=float, default=90.0, show_default=True, help="Seconds of load after they return.")
@click.option("--rate", type=float, default=60.0, show_default=True, help="Events/s, over all regions.")
@click.option("--task", default="sensor", show_default=True, help="The task whose events are served.")
@click.option("--output", type=click.Path(path_type=Path), help="Write the report JSON here.")
@click.option("--workdir", type=click.Path(path_type=Path), help="Where brokers and logs go [a temp dir, kept].")
@pass_state
def regions_cut(
    state: State,
    region: str | None,
    before: float,
    cut_s: float,
    after: float,
    rate: float,
    task: str,
    output: Path | None,
    workdir: Path | None,
) -> None:
    """The lattice (router, a worker per region) under load while one region's data centre loses every
    link outside it, then gets them back: when its events are answered elsewhere, when they come
    home, and what the independent checker finds lost. Exit 1 if anything was lost."""
    from streamlattice.chaos.regions import cut_run, cut_summary

    region = region or state.lattice.regions[-1].name
    state.lattice.region(region)
    report = cut_run(
        state.lattice,
        _workdir(workdir, "cut"),
        region,
        task=task,
        rate=rate,
        before_s=before,
        cut_s=cut_s,
        after_s=after,
        progress=lambda m: click.echo(m, err=True),
    )
    click.echo(cut_summary(report))
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=1) + "\n")
        click.echo(f"wrote {output}", err=True)
    sys.exit(0 if report["verdict"]["lost"] == 0 and not report["crashed"] else 1)


@regions.command("install")
def regions_install() -> None:
    """Build Toxiproxy with `go install` into the cache (the first emulated run does this too)."""
    from streamlattice.devbroker.toxiproxy import install

    click.echo(install(progress=lambda m: click.echo(m, err=True)))
