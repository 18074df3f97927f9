"""Shared pieces of the benchmark suite: timing, rows, the machine description.

Every figure the suite reports is a ratio against a baseline measured in the same run, so a slow or
busy machine shifts both sides alike. Timings are medians over repeated runs with a warm-up excluded.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Config", "Row", "machine", "median_us", "per_call_us", "rss_bytes"]


@dataclass(frozen=True)
class Config:
    """Sizes for one suite run; :meth:`quick` is a fast sanity pass (seconds, not minutes)."""

    quick: bool = False
    rounds: int = 5
    hook_calls: int = 2000
    e2e_calls: int = 200
    e2e_rounds: int = 3
    concurrent_callers: int = 1000
    append_lines: int = 50_000
    fsync_lines: int = 1000
    ledger_entries: int = 20_000
    raw_verifies: int = 5000
    memory_calls: int = 10_000
    growth_calls: int = 100_000
    growth_entries: int = 100_000

    @classmethod
    def quick_config(cls) -> Config:
        return cls(
            quick=True,
            rounds=3,
            hook_calls=200,
            e2e_calls=20,
            e2e_rounds=1,
            concurrent_callers=1000,
            append_lines=3000,
            fsync_lines=100,
            ledger_entries=500,
            raw_verifies=500,
            memory_calls=500,
            growth_calls=2000,
            growth_entries=2000,
        )


@dataclass
class Row:
    """One reported figure: ``value`` (in ``unit``) and ``ratio`` = value / ``baseline`` (same run).

    ``goal`` is the issue's target for the ratio (``"<= 2.5"``, ``">= 0.9"``), ``ok`` whether it was met
    (``None`` when the row is informational).
    """

    target: str
    name: str
    value: float
    unit: str
    baseline_name: str
    baseline: float
    goal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    @property
    def ok(self) -> bool | None:
        if not self.goal:
            return None
        op, limit = self.goal.split()
        return self.ratio <= float(limit) if op == "<=" else self.ratio >= float(limit)

    @property
    def absolute(self) -> str:
        """An absolute target the issue states beside the ratio (``>= 50000 lines/s``), with its verdict."""
        goal = self.extra.get("absolute_goal")
        if not goal:
            return ""
        return f"{goal}: {'met' if self.extra.get('absolute_ok') else 'MISSED'}"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        names = ("target", "name", "value", "unit", "baseline_name", "baseline", "goal", "extra")
        return cls(**{name: data[name] for name in names})

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = float(f"{self.ratio:.6g}")
        data["ok"] = self.ok
        return data


def per_call_us(fn: Callable[[], object], number: int) -> float:
    """Mean µs of ``fn`` over ``number`` back-to-back calls (one sample)."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(number):
        fn()
    return (clock() - start) / number / 1000


def median_us(fn: Callable[[], object], *, number: int, rounds: int, warmup: int = 50) -> float:
    """Median over ``rounds`` samples of :func:`per_call_us`, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(per_call_us(fn, number) for _ in range(rounds))


def rss_bytes() -> int:
    """Resident set size of this process (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """nproc, CPU model, Python version and platform: what docs/performance.md records."""
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
