"""Plausible multichannel machine-sensor windows with labelled, injected anomalies.

A window is [3, 64] float32: temperature (°C), vibration (g) and motor current (A)
sampled over a short time. Each source (device) has its own operating point; anomalies
are the faults a condition monitor looks for: a bearing knock (vibration spikes), an
overheating ramp, a supply sag in the current, and a loose mount (broadband vibration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS = ("temperature", "vibration", "current")
SAMPLES = 64
ANOMALY_KINDS = ("knock", "overheat", "sag", "loose")


@dataclass(frozen=True)
class Windows:
    """A set of generated windows with their ground truth."""

    x: np.ndarray  # [n, 3, 64] float32
    anomaly: np.ndarray  # [n] bool
    kind: list[str]  # "normal" or one of ANOMALY_KINDS
    source_id: list[str]


def generate(n: int, seed: int = 0, anomaly_rate: float = 0.1, devices: int = 50) -> Windows:
    """`n` windows from `devices` machines, an `anomaly_rate` share of them faulty."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES, dtype=np.float64)
    dev = rng.integers(0, devices, n)
    dev_rng = np.random.default_rng(seed + 7919)
    temp_base = dev_rng.uniform(40, 70, devices)[dev]
    vib_amp = dev_rng.uniform(0.8, 1.2, devices)[dev]
    vib_freq = dev_rng.uniform(4, 8, devices)[dev]
    cur_base = dev_rng.uniform(8, 12, devices)[dev]

    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    temp = temp_base[:, None] + 0.5 * np.sin(2 * np.pi * t / SAMPLES + phase) + rng.normal(0, 0.2, (n, SAMPLES))
    vib = vib_amp[:, None] * np.sin(2 * np.pi * vib_freq[:, None] * t / SAMPLES + phase) + rng.normal(
        0, 0.1, (n, SAMPLES)
    )
    cur = cur_base[:, None] + 0.3 * vib_amp[:, None] + rng.normal(0, 0.1, (n, SAMPLES))

    anomaly = rng.random(n) < anomaly_rate
    kinds = np.array(["normal"] * n, dtype=object)
    kinds[anomaly] = rng.choice(ANOMALY_KINDS, int(anomaly.sum()))
    for i in np.flatnonzero(anomaly):
        start = int(rng.integers(0, SAMPLES - 16))
        if kinds[i] == "knock":
            width = int(rng.integers(2, 5))
            vib[i, start : start + width] += rng.choice([-1, 1]) * rng.uniform(3, 6) * vib_amp[i]
        elif kinds[i] == "overheat":
            temp[i] += np.linspace(0, rng.uniform(3, 8), SAMPLES)
        elif kinds[i] == "sag":
            width = int(rng.integers(10, 30))
            cur[i, start : start + width] *= 1 - rng.uniform(0.2, 0.4)
        else:  # loose
            vib[i] += rng.normal(0, rng.uniform(0.4, 0.8), SAMPLES)
    x = np.stack([temp, vib, cur], axis=1).astype(np.float32)
    return Windows(x, anomaly, list(kinds), [f"machine-{d:04d}" for d in dev])


def sample(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Payloads and source ids for the load generator: `n` windows, 5% anomalous."""
    w = generate(n, seed=seed, anomaly_rate=0.05)
    return w.x, w.source_id
