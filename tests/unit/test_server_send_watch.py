"""The middleware's one ``send`` wrapper does what ``SessionBindings.watch`` inside
``InFlightIds.watch`` did (the two nested wrappers it replaced), message by message."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.server._inflight import InFlightIds
from mcpclient_auth.server._sessions import Caller, SessionBindings
from mcpclient_auth.server.middleware import _watch

MARIA = Caller("maria", "agent", "thumb-a")
ERIK = Caller("erik", "agent", "thumb-b")
IDS = ["s1", "s2", "new", "x" * 300, ""]

_start = st.builds(
    lambda status, headers: {"type": "http.response.start", "status": status, "headers": headers},
    st.sampled_from([200, 201, 204, 299, 300, 400, 404, 500]),
    st.lists(
        st.tuples(
            st.sampled_from([b"mcp-session-id", b"Mcp-Session-Id", b"content-type"]),
            st.sampled_from([b"s1", b"s2", b"new", b"\xff", b"x" * 300, b""]),
        ),
        max_size=3,
    ),
)
_body = st.builds(
    lambda body, more: {"type": "http.response.body", "body": body, "more_body": more},
    st.sampled_from([b"", b"{}"]),
    st.booleans(),
)
_other = st.sampled_from([{"type": "http.response.trailers"}, {"type": "http.response.body"}, {}])


def _state(sessions: SessionBindings | None, inflight: InFlightIds, key: Any) -> Any:
    owners = None if sessions is None else {i: sessions.owner(i) for i in IDS}
    return owners, len(inflight), key is not None and inflight.claim(*key) is None


@settings(max_examples=500, deadline=None)
@given(
    method=st.sampled_from(["POST", "DELETE", "GET"]),
    session_id=st.sampled_from([None, "s1", "s2"]),
    caller=st.sampled_from([MARIA, ERIK, None]),
    bound=st.booleans(),
    pending=st.booleans(),
    messages=st.lists(st.one_of(_start, _body, _other), min_size=1, max_size=5),
)
def test_one_wrapper_equals_the_two_nested_ones(
    method: str, session_id: str | None, caller: Caller | None, bound: bool, pending: bool, messages: list[Any]
) -> None:
    def world() -> tuple[SessionBindings | None, InFlightIds, Any]:
        sessions = SessionBindings(clock=lambda: 0.0) if caller is not None else None
        if sessions is not None and bound:
            sessions.bind("s1", MARIA)
            sessions.bind("s2", ERIK)
        inflight = InFlightIds()
        key = inflight.claim(session_id or "s0", 7) if pending else None
        return sessions, inflight, key

    async def run(combined: bool) -> list[Any]:
        sessions, inflight, key = world()
        forwarded: list[Any] = []

        async def send(message: Any) -> None:
            forwarded.append(dict(message))

        if combined:
            watched = _watch(send, sessions, method, session_id, caller, inflight, key)
        else:  # what the middleware did before: sessions.watch first, inflight.watch around it
            watched = send
            if sessions is not None and caller is not None:
                watched = sessions.watch(watched, method, session_id, caller)
            if key is not None:
                watched = inflight.watch(watched, key)
        trace = []
        for message in messages:
            await watched(message)
            # _state re-claims the key to test it is free; release it again for the next step
            state = _state(sessions, inflight, key)
            if key is not None and not state[2]:
                inflight.release(key)
            trace.append((list(forwarded), state))
        return trace

    assert asyncio.run(run(True)) == asyncio.run(run(False))


async def test_the_watch_binds_a_returned_session_and_frees_the_id_on_the_last_chunk() -> None:
    sessions, inflight = SessionBindings(), InFlightIds()
    key = inflight.claim("s1", 1)
    assert key is not None
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    watched = _watch(send, sessions, "POST", None, MARIA, inflight, key)
    await watched({"type": "http.response.start", "status": 200, "headers": [(b"mcp-session-id", b"abc")]})
    assert sessions.owner("abc") == MARIA and len(inflight) == 1
    await watched({"type": "http.response.body", "body": b"{", "more_body": True})
    assert len(inflight) == 1
    await watched({"type": "http.response.body", "body": b"}"})
    assert len(inflight) == 0 and len(sent) == 3
