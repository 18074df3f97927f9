"""The profile pass's phase clock (benchmarks/_phases.py): exclusive accounting, with a fake clock.

No timing is asserted: the clock is a counter the test advances.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from benchmarks._phases import WAITING, PhaseClock


class Ticks:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_nested_time_counts_only_for_the_inner_phase() -> None:
    ticks = Ticks()
    clock = PhaseClock(now=ticks)

    class Work:
        def inner(self) -> None:
            ticks.now += 5

        def outer(self) -> None:
            ticks.now += 10
            self.inner()
            ticks.now += 1

        @staticmethod
        def helper() -> int:
            ticks.now += 2
            return 7

    clock.wrap(Work, "inner", "ledger")
    clock.wrap(Work, "outer", "hook")
    clock.wrap(Work, "helper", "hook")
    Work().outer()
    assert Work.helper() == 7
    assert clock.snapshot() == {"hook": (13, 2), "ledger": (5, 1)}
    clock.unwrap_all()
    Work().outer()
    assert clock.snapshot() == {"hook": (13, 2), "ledger": (5, 1)}  # unwrapped: nothing counted


def test_async_generators_are_timed_per_step_and_waiting_is_not_reported() -> None:
    ticks = Ticks()
    clock = PhaseClock(now=ticks)

    class Flow:
        async def flow(self, first: int) -> AsyncGenerator[int, Any]:
            ticks.now += 3
            answer = yield first
            ticks.now += 4
            yield answer * 2

        async def wait(self) -> None:
            ticks.now += 100

    clock.wrap(Flow, "flow", "auth flow")
    clock.wrap(Flow, "wait", WAITING)

    async def main() -> list[int]:
        generator = Flow().flow(1)
        got = [await generator.__anext__()]
        ticks.now += 50  # the transport, outside the flow
        got.append(await generator.asend(21))
        await generator.aclose()
        await Flow().wait()
        return got

    assert asyncio.run(main()) == [1, 42]
    assert clock.snapshot() == {"auth flow": (7, 1)}
