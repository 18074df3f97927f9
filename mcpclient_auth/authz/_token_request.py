"""One token request: POST the form, authenticate the client, retry once if transient, parse strictly.

    token = await request_token(client, "https://idp/token", form, auth,
                                now=time.time, requested_scopes=("mcp.read",))

Failure mapping (DESIGN §4), with one retry after ~``retry_backoff`` seconds (jittered) only for
connect/read/write/timeout errors and HTTP 429, 500, 502, 503, 504:

* still transient after the retry -> :class:`TokenExchangeUnavailable` (``retryable=True``)
* other 4xx -> :class:`TokenExchangeRejected` (the OAuth ``error`` code is kept, nothing else)
* a 200 that is not a usable token response -> :class:`InvalidTokenResponse`
* anything else (other 5xx, unusable transport) -> :class:`TokenExchangeUnavailable`, not retryable

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

from .._encoding import strict_json_loads
from ..errors import (
    ConfigurationError,
    InvalidTokenResponse,
    TokenExchangeRejected,
    TokenExchangeUnavailable,
)
from .base import HEADER_SAFE, SAFE_CODE, AccessToken, normalise_scopes
from .client_auth import ClientAuthentication

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
    """Refuse an ``httpx.AsyncClient`` that carries our MCP signing hooks (see SIGNING_HOOK_MARKER)."""
    if not isinstance(client, httpx.AsyncClient):
        raise ConfigurationError("http_client must be an httpx.AsyncClient")
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
) -> AccessToken:
    """POST ``form`` to ``endpoint`` (at most twice) and return the parsed :class:`AccessToken`."""
    body = await request_token_body(
        client, endpoint, form, client_auth, now=now, retry_backoff=retry_backoff,
        attempt_timeout=attempt_timeout, what=what,
    )
    return parse_token_response(
        body,
        now=now(),
        requested_scopes=requested_scopes,
        expected_issued_token_type=expected_issued_token_type,
        require_issued_token_type=require_issued_token_type,
        what=what,
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
) -> bytes:
    """:func:`request_token` up to the parse: the 200 body (for sources that read more members,
    such as ``refresh_token``). Same retry and failure mapping."""
    where = _loggable(endpoint)
    for attempt in (1, 2):
        if attempt == 2:
            # Jitter spreads the retries of many clients that failed together.
            await asyncio.sleep(retry_backoff * random.uniform(0.8, 1.2))
        try:
            body = await _attempt(
                client, endpoint, form, client_auth, now=now, attempt_timeout=attempt_timeout, what=what
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


async def _attempt(
    client: httpx.AsyncClient,
    endpoint: str,
    form: FormData,
    client_auth: ClientAuthentication,
    *,
    now: Callable[[], float],
    attempt_timeout: float,
    what: str,
) -> bytes:
    fields: dict[str, str | list[str]] = {k: v if isinstance(v, str) else list(v) for k, v in form.items()}
    headers = {"Accept": "application/json"}
    client_auth.apply(fields, headers, token_endpoint=endpoint, now=now())
    try:
        async with asyncio.timeout(attempt_timeout):
            async with client.stream("POST", endpoint, data=fields, headers=headers) as response:
                status = response.status_code
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
) -> AccessToken:
    """Strictly parse an RFC 6749 §5.1 / RFC 8693 §2.2.1 success response.

    ``access_token`` (visible-ASCII string) and ``token_type`` (``Bearer`` or ``N_A``, any case) are
    required; ``expires_in`` is an optional non-negative integer; ``scope`` an optional string of
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
