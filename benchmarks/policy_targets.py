"""Target 8: what "every call inside the mandate" costs — list filtering and constraint checks.

    python -m benchmarks --only 8

- The server's list filter (``server/_listfilter.py``) on a 100-tool ``tools/list`` answer, as
  ``application/json`` and as one ``text/event-stream`` event, driven through the ASGI ``send`` wrapper
  the middleware installs. Baseline: ``json.loads`` + ``json.dumps`` of the same body — the least any
  filter that rewrites the listing has to pay.
- The client's per-call check with constraints (``check_call`` + ``CallBudget.charge`` for
  ``{"args": ..., "max_calls": ...}``). Baseline: ``check_call`` alone (an unconstrained capability).

Informational rows: the issue sets no ratio goal for them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import MutableMapping
from typing import Any

from mcpclient_auth.act import Mandate
from mcpclient_auth.constraints import DEFAULT_REGISTRY, CallBudget
from mcpclient_auth.jsonrpc import Call
from mcpclient_auth.keys import Identity
from mcpclient_auth.policy import McpActionPolicy, check_call
from mcpclient_auth.server._listfilter import list_filter_send

from ._common import Config, Row, median_us

__all__ = ["policy_costs"]

_TOOLS = 100


def _listing() -> bytes:
    tools = [
        {"name": f"tool_{i}", "description": "x" * 200, "inputSchema": {"type": "object", "properties": {}}}
        for i in range(_TOOLS)
    ]
    return json.dumps({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}).encode()


def _filter_us(body: bytes, media: str, mandate: Mandate, config: Config) -> float:
    call = Call("request", "tools/list", 7, None, {})
    policy = McpActionPolicy()
    payload = b"event: message\r\ndata: " + body + b"\r\n\r\n" if media == "text/event-stream" else body

    async def sink(message: MutableMapping[str, Any]) -> None:
        return None

    async def one() -> None:
        send = list_filter_send(sink, "POST", call, mandate, policy, DEFAULT_REGISTRY, max_bytes=1 << 22)
        headers = [(b"content-type", media.encode()), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    number = 50 if config.quick else 500
    samples = []
    loop = asyncio.new_event_loop()
    try:
        for _ in range(config.rounds + 1):
            start = time.perf_counter_ns()
            loop.run_until_complete(_repeat(one, number))
            samples.append((time.perf_counter_ns() - start) / number / 1000)
    finally:
        loop.close()
    return sorted(samples[1:])[len(samples[1:]) // 2]


async def _repeat(fn: Any, number: int) -> None:
    for _ in range(number):
        await fn()


def policy_costs(config: Config) -> list[Row]:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="agent")
    granted = [f"mcp.tool_{i}" for i in range(0, _TOOLS, 2)]
    mandate = Mandate.issue(user, agent=agent, audience="http://h/mcp", purpose="p", capabilities=granted)
    body = _listing()
    number = 50 if config.quick else 500
    baseline = median_us(lambda: json.dumps(json.loads(body)), number=number, rounds=config.rounds)
    rows = [
        Row(
            "8",
            f"list filter, {_TOOLS}-tool tools/list, {media.split('/')[1]}",
            _filter_us(body, media, mandate, config),
            "µs/answer",
            "json.loads+dumps of the body",
            baseline,
        )
        for media in ("application/json", "text/event-stream")
    ]

    constrained = {
        "action": "mcp.salary",
        "constraints": {"args": {"employee": {"one_of": ["bob"]}}, "max_calls": 10**9},
    }
    with_constraints = Mandate.issue(
        user, agent=agent, audience="http://h/mcp", purpose="p", capabilities=[constrained]
    )
    plain = Mandate.issue(
        user, agent=agent, audience="http://h/mcp", purpose="p", capabilities=["mcp.salary"]
    )
    call = Call("request", "tools/call", 1, "salary", {"name": "salary", "arguments": {"employee": "bob"}})
    policy = McpActionPolicy()
    budget = CallBudget(max_runs=1)

    def checked() -> None:
        action = check_call(policy, call, with_constraints)
        budget.charge("run", action, with_constraints.constraints(action), call, expires=2e9)

    calls = config.hook_calls * 10
    rows.append(
        Row(
            "8",
            "client call check with args + max_calls constraints",
            median_us(checked, number=calls, rounds=config.rounds),
            "µs/call",
            "check_call, unconstrained",
            median_us(lambda: check_call(policy, call, plain), number=calls, rounds=config.rounds),
        )
    )
    return rows
