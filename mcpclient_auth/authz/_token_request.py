"""One token request: POST the form, authenticate the client, retry once if transient, parse strictly.

    token = await request_token(client, "https://idp/token", form, auth,
                                now=time.time, requested_scopes=("mcp.read",))

Failure mapping (DESIGN §4), with one retry after ~``retry_backoff`` seconds (jittered) only for
connect/read/write/timeout errors and HTTP 429, 500, 502, 503, 504:

* still transient after the retry -> :class:`TokenExchangeUnavailable` (``retryable=True``)
* other 4xx -> :class:`TokenExchangeRejected` (the OAuth ``error`` code is kept, nothing else)
* a 200 that is not a usable token response -> :class:`InvalidTokenResponse`
* anything else (other 5xx, unusable transport) -> :class:`TokenExchangeUnavailable`, not retryable

With ``dpop=`` (RFC 9449 §5) every attempt carries a fresh ``DPoP`` proof (``htm=POST``, ``htu`` = the
endpoint, the nonce this endpoint's origin gave last); a 400 ``use_dpop_nonce`` with a ``DPoP-Nonce``
is retried once at once with that nonce (§8), and the token response must say ``token_type=DPoP``
(:class:`~mcpclient_auth.errors.DPoPNotBound` otherwise: a proof was sent, a bearer token is never
accepted in its place).

No message, detail or log line carries the form (subject token, assertion, client secret) or the
identity provider's body: only status codes, exception class names and a validated ``error`` code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from .. import _telemetry
from .._encoding import strict_json_loads
from ..errors import (
    ConfigurationError,
    DPoPNotBound,
    InvalidTokenResponse,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)
from .base import HEADER_SAFE, SAFE_CODE, AccessToken, normalise_scopes
from .client_auth import ClientAuthentication
from .dpop import DPOP_HEADER, DPOP_NONCE_HEADER, DPOP_TOKEN_TYPE, USE_DPOP_NONCE, DPoP

__all__ = [
    "DEFAULT_RETRY_BACKOFF",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "SIGNING_HOOK_MARKER",
    "TRANSIENT_STATUSES",
    "check_endpoint",
    "check_idp_client",
    "default_http_client",
    "parse_token_response",
    "refresh_token_of",
    "request_token",
    "request_token_body",
]

_log = logging.getLogger("mcpclient_auth.authz")

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Transport failures that a second attempt may cure; anything else (bad scheme, proxy errors, local
# protocol errors) is a configuration problem and fails at once.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.TimeoutException,
    httpx.ConnectError,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    TimeoutError,  # our own per-attempt total deadline
)
DEFAULT_RETRY_BACKOFF = 0.3
#: Per-attempt total deadline (seconds) on top of the client's own per-phase timeouts.
DEFAULT_TIMEOUT = 10.0
#: Token responses are a few KiB; a bound keeps a hostile or broken endpoint from costing memory.
MAX_RESPONSE_BYTES = 256 * 1024
#: Larger ``expires_in`` values are refused: no real token lives 136 years, and an unbounded integer
#: would overflow the float arithmetic of ``expires_at`` (an untyped ``OverflowError``).
MAX_EXPIRES_IN = 2**32
#: Attribute that the request-signing hooks carry. A client with such a hook must never be used
#: for identity-provider requests (it would sign and ledger them, and may add a bearer token).
SIGNING_HOOK_MARKER = "__mcpclient_auth_signing_hook__"

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_TOKEN_TYPES = {"bearer": "Bearer", "n_a": "N_A"}

FormData = Mapping[str, "str | Sequence[str]"]


def default_http_client() -> httpx.AsyncClient:
    """The client a source makes for itself: connect 5 s, 10 s per phase, no redirects, no hooks."""
    return httpx.AsyncClient(timeout=httpx.Timeout(DEFAULT_TIMEOUT, connect=5.0), follow_redirects=False)


def check_idp_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Refuse an ``httpx.AsyncClient`` that carries our MCP signing hooks (see SIGNING_HOOK_MARKER) or
    follows redirects."""
    if not isinstance(client, httpx.AsyncClient):
        raise ConfigurationError("http_client must be an httpx.AsyncClient")
    if client.follow_redirects:
        # On a redirect httpx re-sends the form (307/308: client secret, assertion, subject token)
        # and the DPoP proof to wherever the IdP's answer points; only Authorization is stripped.
        raise ConfigurationError(
            "http_client follows redirects; identity-provider requests must not (build it with "
            "follow_redirects=False)"
        )
    for hooks in client.event_hooks.values():
        if any(getattr(hook, SIGNING_HOOK_MARKER, False) for hook in hooks):
            raise ConfigurationError(
                "http_client carries mcpclient-auth signing hooks; identity-provider requests must "
                "use a separate client"
            )
    return client


def check_endpoint(url: str, what: str = "token_endpoint") -> str:
    """An absolute https URL (http only on loopback), without credentials or fragment."""
    if not isinstance(url, str) or not url:
        raise ConfigurationError(f"{what} must be an absolute URL")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        raise ConfigurationError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ConfigurationError(f"{what} must be an absolute http(s) URL")
    if parts.scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise ConfigurationError(f"{what} must use https (plain http is only allowed on loopback)")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ConfigurationError(f"{what} must not contain user info or a fragment")
    return url


def _loggable(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class _Transient(Exception):
    """Internal: an attempt failed in a way a second attempt may cure."""

    def __init__(self, cause: str, status: int | None = None) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status


async def request_token(
    client: httpx.AsyncClient,
    endpoint: str,
    form: FormData,
    client_auth: ClientAuthentication,
    *,
    now: Callable[[], float],
    requested_scopes: Collection[str] = (),
    expected_issued_token_type: str | None = None,
    require_issued_token_type: bool = False,
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    attempt_timeout: float = DEFAULT_TIMEOUT,
    what: str = "token request",
    dpop: DPoP | None = None,
) -> AccessToken:
    """POST ``form`` to ``endpoint`` (at most twice) and return the parsed :class:`AccessToken`."""
    body = await request_token_body(
        client, endpoint, form, client_auth, now=now, retry_backoff=retry_backoff,
        attempt_timeout=attempt_timeout, what=what, dpop=dpop,
    )
    return parse_token_response(
        body,
        now=now(),
        requested_scopes=requested_scopes,
        expected_issued_token_type=expected_issued_token_type,
        require_issued_token_type=require_issued_token_type,
        what=what,
        dpop_bound=dpop is not None,
    )


async def request_token_body(
    client: httpx.AsyncClient,
    endpoint: str,
    form: FormData,
    client_auth: ClientAuthentication,
    *,
    now: Callable[[], float],
    retry_backoff: float = DEFAULT_RETRY_BACKOFF,
    attempt_timeout: float = DEFAULT_TIMEOUT,
    what: str = "token request",
    dpop: DPoP | None = None,
) -> bytes:
    """:func:`request_token` up to the parse: the 200 body (for sources that read more members,
    such as ``refresh_token``). Same retry and failure mapping; with ``dpop``, parse the body with
    ``parse_token_response(..., dpop_bound=True)``."""
    where = _loggable(endpoint)
    for attempt in (1, 2):
        if attempt == 2:
            _telemetry.token_retry()
            # Jitter spreads the retries of many clients that failed together.
            await asyncio.sleep(retry_backoff * random.uniform(0.8, 1.2))
        try:
            body = await _attempt_with_nonce(
                client, endpoint, form, client_auth, now=now, attempt_timeout=attempt_timeout, what=what,
                dpop=dpop,
            )
        except _Transient as failure:
            _log.warning("%s to %s failed (%s), attempt %d of 2", what, where, failure.cause, attempt)
            if attempt == 2:
                raise TokenExchangeUnavailable(
                    f"the {what} to {where} failed twice ({failure.cause})",
                    status=failure.status,
                    cause=failure.cause,
                    attempts=2,
                ) from None
            continue
        _log.debug("%s to %s succeeded on attempt %d", what, where, attempt)
        return body
    raise AssertionError("unreachable")  # pragma: no cover


def refresh_token_of(body: bytes) -> str | None:
    """The ``refresh_token`` of a token response :func:`parse_token_response` accepted, if it offers
    a usable one (visible ASCII); anything else counts as not offered."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    value = data.get("refresh_token") if isinstance(data, dict) else None
    return value if isinstance(value, str) and HEADER_SAFE.fullmatch(value) else None


class _UseNonce(Exception):
    """Internal: the token endpoint answered ``use_dpop_nonce`` and gave a nonce we now hold."""


async def _attempt_with_nonce(
    client: httpx.AsyncClient,
    endpoint: str,
    form: FormData,
    client_auth: ClientAuthentication,
    *,
    now: Callable[[], float],
    attempt_timeout: float,
    what: str,
    dpop: DPoP | None,
) -> bytes:
    """One attempt, plus at most one resend with the nonce a ``use_dpop_nonce`` answer gave
    (RFC 9449 §8): a second ``use_dpop_nonce`` is a refusal like any other 4xx."""
    try:
        return await _attempt(
            client, endpoint, form, client_auth, now=now, attempt_timeout=attempt_timeout, what=what,
            dpop=dpop, nonce_retry=True,
        )
    except _UseNonce:
        _log.debug("%s to %s: resending with the DPoP nonce the server gave", what, _loggable(endpoint))
        return await _attempt(
            client, endpoint, form, client_auth, now=now, attempt_timeout=attempt_timeout, what=what,
            dpop=dpop, nonce_retry=False,
        )


async def _attempt(
    client: httpx.AsyncClient,
    endpoint: str,
    form: FormData,
    client_auth: ClientAuthentication,
    *,
    now: Callable[[], float],
    attempt_timeout: float,
    what: str,
    dpop: DPoP | None = None,
    nonce_retry: bool = False,
) -> bytes:
    fields: dict[str, str | list[str]] = {k: v if isinstance(v, str) else list(v) for k, v in form.items()}
    headers = {"Accept": "application/json"}
    client_auth.apply(fields, headers, token_endpoint=endpoint, now=now())
    sent_nonce: str | None = None
    if dpop is not None:
        # A fresh proof per attempt (its jti is single-use at the server), with this AS's last nonce.
        sent_nonce = dpop.nonce_for("as", endpoint)
        headers[DPOP_HEADER] = dpop.proof("POST", endpoint, nonce=sent_nonce, now=now()).token
    given_nonce: str | None = None
    try:
        async with asyncio.timeout(attempt_timeout):
            async with client.stream("POST", endpoint, data=fields, headers=headers) as response:
                status = response.status_code
                if dpop is not None:
                    # §8.2: a nonce may come with any answer, successful or not; keep the newest.
                    given_nonce = response.headers.get(DPOP_NONCE_HEADER)
                    if given_nonce is not None and not dpop.remember_nonce("as", endpoint, given_nonce):
                        given_nonce = None
                if status in TRANSIENT_STATUSES:
                    raise _Transient(f"HTTP {status}", status)
                body = await _read_capped(response, what)
    except _TRANSIENT_ERRORS as exc:
        raise _Transient(type(exc).__name__) from None
    except httpx.HTTPError as exc:
        raise TokenExchangeUnavailable(
            f"the {what} could not be sent ({type(exc).__name__})",
            cause=type(exc).__name__,
            retryable=False,
        ) from None
    if status == 200:
        return body
    if 400 <= status < 500:
        code = _error_code(body)
        if (
            code == USE_DPOP_NONCE
            and nonce_retry
            and given_nonce is not None
            and given_nonce != sent_nonce  # the same nonce again would be refused again
        ):
            raise _UseNonce
        raise TokenExchangeRejected(
            f"the identity provider rejected the {what} (HTTP {status}, error={code})",
            status=status,
            error=code,
        )
    if status >= 500:
        raise TokenExchangeUnavailable(
            f"the identity provider failed the {what} (HTTP {status})", status=status, retryable=False
        )
    raise InvalidTokenResponse(f"unexpected HTTP {status} from the token endpoint", status=status)


async def _read_capped(response: httpx.Response, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise InvalidTokenResponse(
                f"the {what} response exceeds {MAX_RESPONSE_BYTES} bytes", status=response.status_code
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _error_code(body: bytes) -> str:
    """RFC 6749 §5.2 ``error`` if the body has a short, token-like one; else ``"unknown"``."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return "unknown"
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) and SAFE_CODE.fullmatch(code) else "unknown"


def parse_token_response(
    body: bytes,
    *,
    now: float,
    requested_scopes: Collection[str] = (),
    expected_issued_token_type: str | None = None,
    require_issued_token_type: bool = False,
    what: str = "token request",
    dpop_bound: bool = False,
) -> AccessToken:
    """Strictly parse an RFC 6749 §5.1 / RFC 8693 §2.2.1 success response.

    ``access_token`` (visible-ASCII string) and ``token_type`` (``Bearer`` or ``N_A``, any case; with
    ``dpop_bound`` — a DPoP proof was sent — ``DPoP`` and nothing else, RFC 9449 §5) are required;
    ``expires_in`` is an optional non-negative integer; ``scope`` an optional string of
    scope-tokens (absent = the requested scopes, RFC 6749 §5.1); ``issued_token_type`` an optional
    string, required when ``require_issued_token_type`` (RFC 8693).
    """
    data = strict_json_loads(body, error=InvalidTokenResponse, what=f"the {what} response")
    if not isinstance(data, dict):
        raise InvalidTokenResponse(f"the {what} response is not a JSON object")

    token = data.get("access_token")
    if not isinstance(token, str) or not HEADER_SAFE.fullmatch(token):
        raise InvalidTokenResponse(f"the {what} response has no usable access_token", field="access_token")

    raw_type = data.get("token_type")
    token_type = _TOKEN_TYPES.get(raw_type.lower()) if isinstance(raw_type, str) else None
    if dpop_bound:
        if not isinstance(raw_type, str) or raw_type.lower() != DPOP_TOKEN_TYPE.lower():
            # The server ignored the proof: a bearer token where a bound one was asked for is a
            # downgrade anyone who sees it can use; never accept it in place of a DPoP token.
            shown = raw_type if isinstance(raw_type, str) and SAFE_CODE.fullmatch(raw_type) else None
            raise DPoPNotBound(
                f"the {what} sent a DPoP proof but the response's token_type is {shown!r}, not DPoP",
                field="token_type",
                token_type=shown,
            )
        token_type = DPOP_TOKEN_TYPE
    if token_type is None:
        shown = raw_type if isinstance(raw_type, str) and SAFE_CODE.fullmatch(raw_type) else None
        raise InvalidTokenResponse(
            f"the {what} response has an unsupported token_type {shown!r}",
            field="token_type",
            token_type=shown,
        )

    expires_in = data.get("expires_in")
    if expires_in is None:
        expires_at = None
    elif type(expires_in) is int and 0 <= expires_in <= MAX_EXPIRES_IN:
        expires_at = now + expires_in
    else:
        raise InvalidTokenResponse(f"the {what} response has an invalid expires_in", field="expires_in")

    scope = data.get("scope")
    if scope is None:
        scopes = frozenset(requested_scopes)
    elif isinstance(scope, str):
        try:
            scopes = frozenset(normalise_scopes(scope))
        except ValueError:
            raise InvalidTokenResponse(f"the {what} response has an invalid scope", field="scope") from None
    else:
        raise InvalidTokenResponse(f"the {what} response has an invalid scope", field="scope")

    issued = data.get("issued_token_type")
    if issued is not None and (not isinstance(issued, str) or not issued):
        raise InvalidTokenResponse(
            f"the {what} response has an invalid issued_token_type", field="issued_token_type"
        )
    if issued is None and require_issued_token_type:
        raise InvalidTokenResponse(f"the {what} response lacks issued_token_type", field="issued_token_type")
    if expected_issued_token_type is not None and issued is not None and issued != expected_issued_token_type:
        raise InvalidTokenResponse(
            f"the {what} response issued a different token type than requested", field="issued_token_type"
        )

    return AccessToken(
        token=token, token_type=token_type, expires_at=expires_at, scopes=scopes, issued_token_type=issued
    )
