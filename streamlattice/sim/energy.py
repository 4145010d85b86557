"""Energy and carbon of a step of the simulated lattice, in the form of the Green Software
Foundation's SCI (ISO/IEC 21031:2024): SCI = (E·I + M) per R.

- E: every node's idle watts all day (a node draws them whether or not it serves), plus busy
  watts in proportion to its utilisation, plus each partition move's warm-up (the new node
  loads the model and fills its caches: `warmup_s` at the node's full busy power).
- I: the grid's average intensity at the node, or its marginal intensity (the unit that
  answers one more kWh), reported side by side.
- M: the nodes' embodied carbon, amortised linearly over `lifetime_years`, for the time simulated.
- R: 1,000 inferences. Idle power and embodied carbon are the lattice's, shared over all its
  inferences (fleet-level attribution), so every policy carries the same idle and embodied share.
"""

from __future__ import annotations

from dataclasses import dataclass

# A planned move is one eager rebalance of the worker group (aiokafka rebalances eagerly: every
# member revokes, drains and commits, then gets its new partitions). Measured on live Kafka
# (`streamlattice simulate --measure-pause`, docs/simulation/pause-alo.json: three brokers, a
# sensor worker per region, 150 events/s, 8 planned moves): every partition stopped 0.38-0.47 s on
# average per move, the longest 0.62-0.77 s. The simulator charges every partition the longest.
PLANNED_PAUSE_S = 0.8
WARMUP_S = 2.0  # a moved partition's first seconds on its new node: model and caches warm up
LIFETIME_YEARS = 4.0


@dataclass(frozen=True)
class EnergyModel:
    """The parameters of the accounting."""

    pause_s: float = PLANNED_PAUSE_S
    warmup_s: float = WARMUP_S
    lifetime_years: float = LIFETIME_YEARS

    def embodied_g(self, embodied_kg: float, seconds: float) -> float:
        """A node's embodied carbon for `seconds` of its life."""
        return embodied_kg * 1000.0 * seconds / (self.lifetime_years * 365.25 * 86400.0)

    def statement(self) -> str:
        """The accounting method, for the output."""
        return (
            "SCI (Green Software Foundation, ISO/IEC 21031:2024): (E*I + M) per R, R = 1,000 inferences. "
            "E = every node's idle power all day (fleet-level: shared over all inferences, served or not) "
            "+ busy power in proportion to utilisation + a warm-up of "
            f"{self.warmup_s:g} s at full busy power per partition moved. "
            "I = the grid's average intensity (carbon_g_per_1k) or its marginal intensity "
            "(carbon_marginal_g_per_1k: the dispatchable fossil unit, gas 480 or coal 950 g/kWh, "
            "falling to 20 g/kWh as renewables are curtailed above the region's curtailment share). "
            f"M = embodied carbon amortised over {self.lifetime_years:g} years, same for every policy. "
            f"A plan that moves partitions is an eager rebalance: every partition pauses {self.pause_s:g} s "
            "(measured at-least-once on live Kafka: 0.38-0.47 s per partition on average, 0.77 s the longest; "
            "docs/simulation/pause-alo.json)."
        )


DEFAULT_ENERGY = EnergyModel()
