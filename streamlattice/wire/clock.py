"""The one clock of every record timestamp: wall-clock microseconds since the epoch."""

from __future__ import annotations

import time


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch (the unit of every record timestamp)."""
    return time.time_ns() // 1000
