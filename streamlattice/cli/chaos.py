"""`streamlattice chaos`: seeded fault schedules against a live lattice, and the checker's verdict."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click

from streamlattice.chaos.schedule import KINDS, MODES, PLAIN_KINDS, REGION_KINDS, Schedule, check_lab, draw
from streamlattice.cli.base import State, pass_state


def _seeds(text: str) -> list[int]:
    """'7', '0-19' or '1,4,9' as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


@click.command("chaos")
@click.option("--seed", "seeds", default="0", show_default=True, help="Seed(s) of the schedule: 7, 0-19 or 1,4,9.")
@click.option("--minutes", type=float, default=5.0, show_default=True, help="Length of each run under load.")
@click.option(
    "--mode",
    type=click.Choice([*MODES, "both"]),
    default="alo",
    show_default=True,
    help="Worker delivery mode; both: even seeds alo, odd seeds eos.",
)
@click.option("--rate", type=float, default=100.0, show_default=True, help="Events/s published, open loop.")
@click.option("--every", type=float, default=60.0, show_default=True, help="Seconds between faults (±30%).")
@click.option(
    "--kinds",
    help=f"Fault kinds to draw from (comma-separated) [{','.join(PLAIN_KINDS)}; with --regions-emulated also "
    f"{','.join(REGION_KINDS)}].",
)
@click.option("--tasks", default="sensor", show_default=True, help="Tasks to run workers of (comma-separated).")
@click.option(
    "--regions-emulated",
    is_flag=True,
    help="Run on the lattice's regions emulated with real delay (a broker per region, links that can be cut; "
    "one task), so that a schedule can cut a region.",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Run this schedule (or a report's) again.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    help="Report JSON [chaos-<seed>-<mode>.json; with several seeds, a folder].",
)
@click.option("--workdir", type=click.Path(path_type=Path), help="Where the cluster and logs go [a temp dir, kept].")
@click.option("--dry-run", is_flag=True, help="Print the schedule and exit.")
@pass_state
def chaos(
    state: State,
    seeds: str,
    minutes: float,
    mode: str,
    rate: float,
    every: float,
    kinds: str | None,
    tasks: str,
    regions_emulated: bool,
    replay: Path | None,
    output: Path | None,
    workdir: Path | None,
    dry_run: bool,
) -> None:
    """Run the lattice under a fault schedule drawn from a seed, then check its topics.

    Starts a three-broker cluster, the router and a worker per task and region under open-loop
    load, and applies the schedule's faults: SIGKILL or SIGSTOP of a worker, the router killed,
    the group leader killed during a rebalance, the leading broker killed, a rolling restart of
    the brokers, and with --regions-emulated a region's links cut and healed. A checker that
    shares no code with the worker then reads every topic with read_committed and reports events
    published, answered, lost, duplicated, per-key order violations, the recovery after each
    fault and the workers' RSS. Exit code 0 only if nothing was lost (and, with --mode eos,
    nothing duplicated or reordered).

    With --regions-emulated the lattice runs on its regions emulated on this machine (a broker
    per region, every cross-region hop delayed by lattice.toml's latencies through Toxiproxy,
    a worker per region of one task), as `streamlattice regions` does.
    """
    known = KINDS if regions_emulated else PLAIN_KINDS
    kind_list = [k for k in kinds.split(",") if k] if kinds else list(known)
    try:
        schedules = (
            [Schedule.from_json(json.loads(replay.read_text()))]
            if replay
            else [
                draw(
                    s,
                    minutes,
                    MODES[s % 2] if mode == "both" else mode,
                    rate,
                    every,
                    kind_list,
                )
                for s in _seeds(seeds)
            ]
        )
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        raise click.BadParameter(str(e)) from None
    task_list = [t for t in tasks.split(",") if t]
    try:
        for schedule in schedules:
            check_lab(schedule, task_list, regions_emulated)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--kinds/--tasks/--replay") from None
    if dry_run:
        for schedule in schedules:
            click.echo(schedule.dumps())
        return
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "streamlattice chaos needs confluent-kafka for its checker: pip install 'streamlattice[chaos]'"
        ) from None
    from streamlattice.chaos.run import markdown, passed, run, summary, write

    for t in task_list:
        state.lattice.task(t)
    failures = 0
    reports = []
    for schedule in schedules:
        where = Path(workdir or tempfile.mkdtemp(prefix=f"sl-chaos-{schedule.seed}-"))
        where.mkdir(parents=True, exist_ok=True)
        report = run(
            schedule,
            state.lattice,
            task_list,
            where,
            progress=lambda m: click.echo(m, err=True),
            regions_emulated=regions_emulated,
        )
        name = f"chaos-{schedule.seed}-{schedule.mode}.json"
        path = (output / name if output.suffix != ".json" else output) if output else Path(name)
        write(report, path)
        reports.append(report)
        click.echo(summary(report))
        click.echo(f"report: {path}  logs: {where}")
        failures += not passed(report)
        if len(schedules) > 1:  # after every run, so that a long sweep stopped early still has one
            folder = output if output and output.suffix != ".json" else Path(".")
            (folder / "summary.md").write_text(markdown(reports))
            click.echo(f"summary of {len(reports)} runs: {folder / 'summary.md'}")
    sys.exit(1 if failures else 0)
