"""The 401/403 flow (``hooks/auth.py``) without a network: ``verdict()`` as a table, and the auth flow
driven with ``asend()`` (the MCP SDK's way of testing its ``OAuthClientProvider``)."""

from __future__ import annotations

from types import ModuleType

import httpx
import pytest

from mcpclient_auth._hooks import library_named
from mcpclient_auth._hooks.auth import FAIL, MAX_SENDS, OBTAIN, PASS, REOBTAIN, STEP_UP, Attempt, verdict
from mcpclient_auth._hooks.library import EXTENSION_ATTEMPT
from mcpclient_auth.authz import AccessToken

httpx2 = pytest.importorskip("httpx2")


def response(status: int, challenge: str | None = None) -> httpx.Response:
    headers = {"www-authenticate": challenge} if challenge else {}
    return httpx.Response(status, headers=headers)


def attempt(
    *,
    token: bool = True,
    final: bool = False,
    granted: frozenset[str] = frozenset(),
    anonymous: bool = False,
    answered: bool = False,
) -> Attempt:
    sent = Attempt(final=final, anonymous=anonymous, challenge_answered=answered)
    sent.token = AccessToken("tok", scopes=granted) if token else None
    sent.asked_scopes = tuple(sorted(granted))
    return sent


@pytest.mark.parametrize(
    ("sent", "answer", "expected"),
    [
        (attempt(), response(200), PASS),
        (attempt(token=False), response(401, 'Bearer error="invalid_token"'), PASS),  # not our token
        # a send without the token while the run waits for the endpoint's first challenge (SEP-835)
        (attempt(token=False, anonymous=True), response(401, 'Bearer scope="mcp.read"'), OBTAIN),
        (attempt(token=False, anonymous=True), response(401), OBTAIN),  # no challenge: configured scopes
        (attempt(token=False, anonymous=True, answered=True), response(401), PASS),  # once per request
        (attempt(token=False, anonymous=True), response(403, 'Bearer error="insufficient_scope"'), PASS),
        (attempt(token=False, anonymous=True), response(200), PASS),
        (attempt(), response(401, 'Bearer error="invalid_token"'), REOBTAIN),
        (attempt(final=True), response(401, 'Bearer error="invalid_token"'), FAIL),  # one resend only
        (attempt(), response(401), FAIL),  # no challenge: nothing to act on
        (attempt(), response(401, 'Bearer error="invalid_request"'), FAIL),
        (attempt(), response(403), PASS),  # a 403 for another reason (signature, mandate)
        # nothing to judge the allowlist by (no run): never ask the identity provider
        (attempt(), response(403, 'Bearer error="insufficient_scope", scope="mcp.write"'), FAIL),
        # the demanded scopes are all held already: a step-up cannot help
        (
            attempt(granted=frozenset({"mcp.read"})),
            response(403, 'Bearer error="insufficient_scope", scope="mcp.read"'),
            FAIL,
        ),
    ],
)
def test_verdict(sent: Attempt, answer: httpx.Response, expected: str) -> None:
    assert verdict(sent, answer)[0] == expected


def test_step_up_needs_allowed_scopes() -> None:
    class Run:
        discover_resource_metadata = False

        @staticmethod
        def scope_allowlist(endpoint: object, source: object) -> frozenset[str]:
            return frozenset({"mcp.read", "mcp.write"})

    sent = attempt(granted=frozenset({"mcp.read"}))
    sent.run, sent.endpoint = Run(), object()  # type: ignore[assignment]
    challenge = 'Bearer error="insufficient_scope", scope="mcp.write"'
    assert verdict(sent, response(403, challenge))[0] == STEP_UP
    assert verdict(sent, response(403, 'Bearer error="insufficient_scope", scope="mcp.admin"'))[0] == FAIL


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
async def test_the_flow_puts_its_attempt_on_the_request_and_takes_it_off(library: ModuleType) -> None:
    auth = library_named(library.__name__).auth()
    assert isinstance(auth, library.Auth)
    request = library.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    flow = auth.async_auth_flow(request)
    sent = await flow.__anext__()
    assert sent is request and isinstance(request.extensions[EXTENSION_ATTEMPT], Attempt)
    with pytest.raises(StopAsyncIteration):
        await flow.asend(library.Response(200, request=request))
    assert EXTENSION_ATTEMPT not in request.extensions  # nothing of the attempt outlives the request


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_the_sync_flow_is_the_same_flow(library: ModuleType) -> None:
    auth = library_named(library.__name__).auth()
    request = library.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    attempt_ = request.extensions[EXTENSION_ATTEMPT]
    assert sent is request and isinstance(attempt_, Attempt)
    # what the run's request hook records for a send with the user's token
    attempt_.token = AccessToken("tok")
    again = flow.send(library.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'}))
    assert again is request and attempt_.pending == REOBTAIN and attempt_.final  # the hook re-obtains
    with pytest.raises(StopIteration):
        flow.send(library.Response(200, request=request))
    assert EXTENSION_ATTEMPT not in request.extensions and attempt_.token is None  # released


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_first_challenge_then_one_re_obtain_then_a_typed_refusal(library: ModuleType) -> None:
    """The bounded sequence: an anonymous send, its 401 (OBTAIN), the token's 401 (one re-obtain), a
    last 401 (final: UpstreamUnauthorized). Never more than MAX_SENDS sends."""
    from mcpclient_auth.errors import UpstreamUnauthorized

    request = library.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    attempt_ = Attempt()
    steps = library_named(library.__name__).auth().sends(request, attempt_)
    sends = [next(steps)]
    attempt_.anonymous = True  # the hook deferred the token
    sends.append(steps.send(library.Response(401, headers={"www-authenticate": 'Bearer scope="mcp.read"'})))
    assert attempt_.pending == OBTAIN and attempt_.challenge_answered and not attempt_.final
    assert attempt_.challenge is not None and attempt_.challenge.scopes == ("mcp.read",)
    attempt_.pending, attempt_.anonymous, attempt_.token = None, False, AccessToken("tok")  # the hook
    invalid = library.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'})
    sends.append(steps.send(invalid))
    assert attempt_.pending == REOBTAIN and attempt_.final
    with pytest.raises(UpstreamUnauthorized):
        steps.send(invalid)
    assert len(sends) == 3 <= MAX_SENDS
