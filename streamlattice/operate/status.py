"""`streamlattice status`: the lattice at a glance, from Kafka itself.

Group assignments and lag through the admin API, nodes' heartbeats and the newest plans
from their compacted topics. Nothing here needs the router to be up.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition

from streamlattice.config import Lattice
from streamlattice.kafka.clients import KafkaSettings, make_admin, make_consumer, start_client
from streamlattice.kafka.compacted import read_compacted
from streamlattice.kafka.groups import describe_group
from streamlattice.kafka.lag import group_offsets
from streamlattice.wire.clock import now_us
from streamlattice.wire.records import PublishedPlan, decode_heartbeats


async def collect_status(lattice: Lattice, settings: KafkaSettings) -> dict[str, Any]:
    """Everything `status` shows, as one JSON-able dict."""
    now = now_us()
    beats = decode_heartbeats((await read_compacted(settings, lattice.heartbeats_topic)).values())
    heartbeats = {beat.node_id: beat for beat in beats}
    plans = {}
    for key, value in (await read_compacted(settings, lattice.placement_topic)).items():
        try:
            plans[key.decode()] = PublishedPlan.decode(value)
        except Exception:
            continue
    consumer = make_consumer(settings)
    admin = make_admin(settings)
    await start_client(consumer, settings)
    await start_client(admin, settings)
    tasks: dict[str, Any] = {}
    try:
        for task in lattice.tasks:
            tps = [TopicPartition(lattice.events_topic(task), p) for p in range(lattice.total_partitions)]
            offsets = await group_offsets(admin, consumer, lattice.group_id(task), tps)
            group = await describe_group(settings, lattice.group_id(task))
            owner = {p: m.node_id for m in group.members for p in m.partitions}
            plan = plans.get(task)
            planned = plan.assignment if plan else {}
            partitions = []
            for tp in tps:
                o = offsets[tp]
                partitions.append(
                    {
                        "partition": tp.partition,
                        "region": lattice.region_of_partition(tp.partition).name,
                        "owner": owner.get(tp.partition),
                        "planned_node": planned.get(tp.partition),
                        "end_offset": o.end,
                        "committed": o.committed or 0,
                        "lag": o.lag,
                    }
                )
            nodes = []
            for m in sorted(group.members, key=lambda m: m.node_id or ""):
                hb = heartbeats.get(m.node_id or "")
                nodes.append(
                    {
                        "node_id": m.node_id,
                        "region": m.region,
                        "partitions": list(m.partitions),
                        "lag": sum(p["lag"] for p in partitions if p["owner"] == m.node_id),
                        "load_eps": round(hb.load_eps, 1) if hb else None,
                        "capacity_eps": round(hb.capacity_eps) if hb else None,
                        "renewable_fraction": round(hb.renewable_fraction, 3) if hb else None,
                        "carbon_intensity": round(hb.carbon_intensity) if hb else None,
                        "providers": list(hb.providers) if hb else None,
                        "heartbeat_age_s": round(hb.age_s(now), 1) if hb else None,
                    }
                )
            tasks[task] = {
                "group": group.group_id,
                "state": group.state,
                "nodes": nodes,
                "partitions": partitions,
                "lag": sum(p["lag"] for p in partitions),
                "plan": {
                    "epoch": plan.epoch,
                    "age_s": round(plan.age_s(now), 1),
                    "moves": plan.moves,
                    "recommended_replicas": {r.region: r.replicas for r in plan.recommendations},
                }
                if plan
                else None,
            }
    finally:
        await consumer.stop()
        await admin.close()
    return {"bootstrap": settings.bootstrap, "namespace": lattice.namespace, "time_us": now, "tasks": tasks}


def render(status: dict[str, Any], color: bool = True) -> str:
    """The status as a screen for people: per task, its nodes with partitions, lag, load and power."""
    import click

    def style(text: str, **kw: Any) -> str:
        return click.style(text, **kw) if color else text

    lines = [style(f"streamlattice at {status['bootstrap']}  namespace {status['namespace']}", bold=True)]
    for task, t in status["tasks"].items():
        plan = t["plan"]
        plan_txt = f"plan epoch {plan['epoch']} ({plan['age_s']:.0f}s old)" if plan else "no plan (region-local)"
        if plan and plan["recommended_replicas"]:
            wanted = ", ".join(f"{r} {n}" for r, n in plan["recommended_replicas"].items())
            plan_txt += f", recommended replicas: {wanted}"
        lines.append("")
        lines.append(
            style(f"{task}", bold=True) + f"  group {t['state']}, {len(t['nodes'])} node(s), lag {t['lag']}, {plan_txt}"
        )
        if not t["nodes"]:
            lines.append(
                "  no workers: start one with `streamlattice worker --task "
                f"{task} --region REGION` or `streamlattice scale`"
            )
            continue
        lines.append(
            f"  {'node':<22} {'region':<10} {'partitions':<22} {'lag':>6} {'in/s':>7} {'cap/s':>7} "
            f"{'renew':>6} {'gCO2/kWh':>8}"
        )
        for n in t["nodes"]:
            carbon = n["carbon_intensity"]
            c_txt = "-" if carbon is None else f"{carbon:>8}"
            if carbon is not None:
                c_txt = style(f"{carbon:>8}", fg="green" if carbon < 200 else "yellow" if carbon < 450 else "red")
            parts = ",".join(map(str, n["partitions"])) or "-"
            renew = "-" if n["renewable_fraction"] is None else f"{n['renewable_fraction']:.0%}"
            lines.append(
                f"  {n['node_id']!s:<22} {n['region']!s:<10} {parts:<22} {n['lag']:>6} "
                f"{'-' if n['load_eps'] is None else n['load_eps']:>7} "
                f"{'-' if n['capacity_eps'] is None else n['capacity_eps']:>7} {renew:>6} {c_txt}"
            )
    return "\n".join(lines)
