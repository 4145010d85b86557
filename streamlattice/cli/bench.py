"""`streamlattice bench`: the side-by-side benchmark."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from streamlattice import paths
from streamlattice.bench import CONTENDERS
from streamlattice.cli.base import State, pass_state, split_list


@click.command()
@click.option("--quick", is_flag=True, help="One repeat, shorter runs, fewer offered loads (under ten minutes).")
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    show_default="bench/results.json in a checkout, else ./streamlattice-bench/results.json",
    help="The JSON results; RESULTS.md and a picture per task (results-TASK.png) are written beside it.",
)
@click.option("--tasks", default="sensor,vision,language", show_default=True, help="Comma-separated tasks to measure.")
@click.option(
    "--contenders",
    default=",".join(CONTENDERS),
    show_default=True,
    help="Comma-separated contenders to measure.",
)
@click.option("--repeats", type=click.IntRange(min=1), help="Repeats per contender [3; --quick: 1].")
@click.option("--use-broker", metavar="HOST:PORT", help="Measure on this broker instead of starting one for the run.")
@click.option("--no-pin", is_flag=True, help="Do not pin the contender to a core of its own.")
@click.option(
    "--profile",
    type=click.Path(file_okay=False, path_type=Path),
    help="Record each contender's throughput window with py-spy into this folder (speedscope JSON).",
)
@pass_state
def bench(
    state: State,
    quick: bool,
    output: Path | None,
    tasks: str,
    contenders: str,
    repeats: int | None,
    use_broker: str | None,
    no_pin: bool,
    profile: Path | None,
) -> None:
    """Measure streamlattice next to ONNX Runtime alone, the transport alone, a naive and a batched
    aiokafka loop, a faust agent (`stream.take`) and a Quix Streams app on the same events:
    throughput, CPU per 1,000 events, peak RSS, and p50/p99 latency at the same offered loads for
    every contender (unanswered events count as failures). Runs the contenders' files in the
    checkout's bench/contenders/. Needs the bench extra (`pip install -e '.[bench]'`; `./dev bench`
    installs it)."""
    from streamlattice.bench import harness, report

    names = split_list(contenders)
    unknown = set(names) - set(CONTENDERS)
    if unknown:
        raise click.BadParameter(
            f"unknown {sorted(unknown)}; choose from {', '.join(CONTENDERS)}", param_hint="--contenders"
        )
    plan = harness.Plan.quick() if quick else harness.Plan.full()
    if repeats:
        plan = dataclasses.replace(plan, repeats=repeats)
    task_names = split_list(tasks)
    for t in task_names:
        state.lattice.task(t)
    results = harness.run(
        plan, task_names, names, use_broker, not no_pin, state.lattice.source, profile=profile, quick=quick
    )
    if output is None:  # never into site-packages: the checkout's bench/, else the working directory
        root = paths.checkout()
        output = root / "bench" / "results.json" if root else Path("streamlattice-bench") / "results.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    click.echo(report.write(results, output.parent))
    click.echo(f"wrote {output}, RESULTS.md and a picture per task beside it", err=True)
