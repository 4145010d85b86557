"""The benchmark's results as a table, the targets as verdicts, and a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LABELS = {
    "compute_limit": "compute limit (ONNX Runtime alone)",
    "transport_limit": "transport limit (aiokafka alone)",
    "naive": "naive aiokafka loop",
    "batched": "batched aiokafka loop",
    "faust": "faust-streaming agent",
    "quixstreams": "Quix Streams app",
    "streamlattice": "streamlattice worker",
}


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def targets(contenders: dict[str, Any], task: str = "sensor") -> list[tuple[str, bool, str]]:
    """The performance targets, each with whether this run meets it and the measured figure."""
    sl = contenders.get("streamlattice")
    if sl is None:
        return []
    out: list[tuple[str, bool, str]] = []
    if task == "sensor" and sl["p99_ms"] is not None:
        out.append(("sensor p99 at 50% load <= 50 ms", sl["p99_ms"] <= 50, f"{sl['p99_ms']:.1f} ms"))
    out.append(("worker peak RSS <= 300 MB", sl["rss_mb"] <= 300, f"{sl['rss_mb']:.0f} MB"))
    if "naive" in contenders:
        r = sl["throughput_eps"] / contenders["naive"]["throughput_eps"]
        out.append(("throughput >= 3x naive", r >= 3, f"{r:.1f}x"))
    peers = [contenders[p] for p in ("faust", "quixstreams") if p in contenders]
    if peers:
        best = max(peers, key=lambda p: p["throughput_eps"])
        r = sl["throughput_eps"] / best["throughput_eps"]
        out.append(("throughput >= 1.5x best of faust, quixstreams", r >= 1.5, f"{r:.1f}x"))
        if sl["p99_ms"] is not None and all(p["p99_ms"] is not None for p in peers):
            ok = all(sl["p99_ms"] < p["p99_ms"] for p in peers)
            figures = ", ".join(f"{p['p99_ms']:.1f}" for p in peers)
            out.append(("p99 at 50% load below faust's and quixstreams'", ok, f"{sl['p99_ms']:.1f} ms vs {figures} ms"))
    same = [contenders[p]["latency"].get("same", {}).get("p99_ms") for p in ("faust", "quixstreams") if p in contenders]
    ours = sl["latency"].get("same", {}).get("p99_ms")
    if ours is not None and same and None not in same:
        figures = ", ".join(f"{v:.1f}" for v in same)
        out.append(
            (
                "p99 at the same load (1,000/s) below faust's and quixstreams'",
                ours < min(same),
                f"{ours:.1f} ms vs {figures} ms",
            )
        )
    limits = [contenders[k]["throughput_eps"] for k in ("compute_limit", "transport_limit") if k in contenders]
    if limits:
        r = sl["throughput_eps"] / min(limits)
        out.append(("throughput >= 70% of min(compute, transport limit)", r >= 0.7, f"{r:.0%}"))
    return out


def markdown(results: dict[str, Any]) -> str:
    """RESULTS.md: how the run was made, a table per task, the targets."""
    plan = results["plan"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `streamlattice bench{' --quick' if plan['repeats'] == 1 else ''}` "
        f"({results['seconds']} s) on {results['machine']}, Python {results['python']}; "
        f"pinning: {results['pinning']}. Medians of {plan['repeats']} repeat(s), contenders alternating "
        "in order; throughput from a pre-published backlog, latency at an open-loop load of 25/50/75% of "
        "each contender's own maximum (p50/p99 columns: at 50%), and at 1,000 events/s for those that "
        "sustain it. The compute limit's latency is one batch "
        "through the model at its best batch size. Ratios matter, not absolute numbers: the machine is shared.",
        "",
        "![throughput and latency per contender](results.png)",
        "",
    ]
    for task, block in results["tasks"].items():
        contenders = block["contenders"]
        lines += [
            f"## {task}",
            "",
            "| contender | events/s | CPU s / 1k events | peak RSS MB | p50 ms | p99 ms | p99 at 25 / 75% "
            "| p99 at 1,000/s | wrong |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, c in contenders.items():
            lat = c["latency"]
            side = " / ".join(_num(lat.get(k, {}).get("p99_ms"), ".1f") for k in ("0.25", "0.75"))
            lines.append(
                f"| {LABELS.get(name, name)} | {c['throughput_eps']:,.0f} | {c['cpu_s_per_1k']:.3f} | "
                f"{c['rss_mb']:.0f} | {_num(c['p50_ms'], '.1f')} | {_num(c['p99_ms'], '.1f')} | {side} | "
                f"{_num(lat.get('same', {}).get('p99_ms'), '.1f')} | {c['wrong']} |"
            )
        for name, reasons in block.get("failures", {}).items():
            lines.append(f"| {LABELS.get(name, name)} | failed {len(reasons)}x: {reasons[0]} | | | | | | | |")
        lines += ["", "| target | met | measured |", "|---|---|---|"]
        for what, ok, figure in targets(contenders, task):
            lines.append(f"| {what} | {'yes' if ok else '**no**'} | {figure} |")
        lines.append("")
    return "\n".join(lines)


def draw(results: dict[str, Any], png: Path) -> None:
    """Throughput (log scale) and p50/p99 at 50% load, per contender, one row per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["tasks"])
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 3.6 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        contenders = results["tasks"][task]["contenders"]
        names = list(contenders)
        colors = ["#2a9d8f" if n == "streamlattice" else "#adb5bd" if n.endswith("limit") else "#e76f51" for n in names]
        ax = axes[row][0]
        ax.barh(names, [contenders[n]["throughput_eps"] for n in names], color=colors)
        ax.set_xscale("log")
        ax.set_xlabel("events/s (log)")
        ax.set_title(f"{task}: sustained throughput")
        ax.invert_yaxis()
        ax = axes[row][1]
        kafka = [n for n in names if n != "compute_limit"]
        p50 = [contenders[n]["p50_ms"] or 0 for n in kafka]
        p99 = [contenders[n]["p99_ms"] or 0 for n in kafka]
        y = range(len(kafka))
        ax.barh([i + 0.2 for i in y], p99, height=0.4, color="#264653", label="p99")
        ax.barh([i - 0.2 for i in y], p50, height=0.4, color="#8ab17d", label="p50")
        ax.set_yticks(list(y), kafka)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency ms at 50% of own max (log)")
        ax.set_title(f"{task}: latency")
        ax.invert_yaxis()
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
