"""Pre-authentication limits of the reference middleware: what a sender without credentials can cost.

Before a single body byte is read, :meth:`PreAuthGate.screen` refuses a request to a protected path
that cannot possibly verify: a method other than GET, HEAD, POST and DELETE (405
``method_not_allowed``), no ``Signature-Input``, no mandate (the ``ACT-Mandate`` header or a bearer
token), a ``keyid`` that is not in the trust store, a ``Content-Length`` over the body limit, or both
``Content-Length`` and ``Transfer-Encoding`` (400 ``body_framing_ambiguous``: the HTTP server reads
the chunked body, while the declared length is what a budget would charge). Those checks look at
headers only (the ``keyid`` is read from the ``Signature-Input`` field with the project's
structured-field parser; nothing is verified yet), so such a request costs the server a few
microseconds and no buffer.

A request that passes is read by :meth:`PreAuthGate.read_body` under three bounds:

- ``max_body_bytes`` (413 ``body_too_large``), checked as bytes arrive when there is no
  ``Content-Length``;
- ``body_timeout``: the whole body must arrive within this many seconds (408 ``body_timeout``), so a
  slow sender cannot hold a connection and a buffer indefinitely;
- ``max_pending_bodies`` / ``max_pending_body_bytes``: bodies being read at the same time, before
  their senders are authenticated, by count and by reserved bytes (``Content-Length``, or the body
  limit when chunked). The bytes actually received are charged as well, so a body longer than it
  declared is refused before it holds more than the budget granted. Over either bound the request is
  refused at once (503 ``too_many_pending_bodies``, ``Retry-After: 1``) instead of waiting. Bodies
  declared at most ``SMALL_BODY`` (64 KiB, where JSON-RPC calls live) count against
  ``max_pending_bodies`` only, so large bodies cannot crowd out ordinary calls through the byte
  budget; memory held for unauthenticated bodies stays below ``max_pending_body_bytes +
  max_pending_bodies * 64 KiB``. ``max_pending_per_key`` caps the reads that name one ``keyid``, so a
  sender using one key's id cannot take every slot.

These bound memory and time, not who gets served: ``keyid`` values are public (they are key
thumbprints), so a sender who knows one passes the screen and can occupy that key's pending slots
(and, knowing several, all of them) for up to ``body_timeout`` each. Rate limits per client and
header timeouts belong to the proxy in front.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio

from .. import _structured_fields
from .._rfc9421 import ParsedField
from ..errors import (
    BodyFramingAmbiguous,
    BodyTimeout,
    BodyTooLarge,
    ConfigurationError,
    McpClientAuthError,
    MethodNotAllowed,
    SignatureMalformed,
    SignatureMissing,
    TooManyPendingBodies,
    UnknownKey,
)
from ..keys import TrustStore
from .verify import VERIFIED_METHODS

__all__ = ["BODY_METHODS", "SMALL_BODY", "PreAuthGate", "RequestLimits", "Screened"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

#: Methods whose body the middleware buffers (and so bounds).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MiB = 1024 * 1024
#: Declared bodies up to this size are not charged to the byte budget (see the module docstring).
SMALL_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Limits applied before a request is authenticated; see the module docstring."""

    max_body_bytes: int = 4 * MiB
    body_timeout: float = 5.0
    max_pending_bodies: int = 64
    max_pending_body_bytes: int = 64 * MiB
    max_pending_per_key: int = 16

    def __post_init__(self) -> None:
        sizes = (self.max_body_bytes, self.max_pending_bodies, self.max_pending_body_bytes)
        if min(*sizes, self.max_pending_per_key) < 1:
            raise ConfigurationError("request limits must be positive")
        if not self.body_timeout > 0:
            raise ConfigurationError("body_timeout must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class Screened:
    """A request that passed :meth:`PreAuthGate.check`: the (trusted, not yet verified) ``keyid`` it
    names, and its ``Signature-Input`` as parsed to find it — handed to the verifier, which uses
    the parse only for that exact value (:class:`~mcpclient_auth._rfc9421.ParsedField`)."""

    keyid: str
    signature_input: ParsedField


class _PendingBudget:
    """Counts bodies (per named key, and reserved bytes) being read; refuses instead of queueing."""

    def __init__(self, limits: RequestLimits) -> None:
        self.max_count = limits.max_pending_bodies
        self.max_bytes = limits.max_pending_body_bytes
        self.max_per_key = limits.max_pending_per_key
        self.count = 0
        self.reserved = 0
        self.per_key: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, size: int, keyid: str) -> _Reservation:
        """A context manager holding one body read's slot (and ``size`` bytes, charged as
        :func:`_charge` says) while the body is read; :class:`TooManyPendingBodies` on entry when the
        budget has no room. A class, not a generator-based ``@contextmanager``: it runs once per
        request, before anything is authenticated."""
        return _Reservation(self, _charge(size), keyid)

    def _enter(self, reservation: _Reservation) -> None:
        keyid = reservation.keyid
        with self._lock:
            for_key = self.per_key.get(keyid, 0)
            if (
                self.count + 1 > self.max_count
                or for_key + 1 > self.max_per_key
                or self.reserved + reservation.charged > self.max_bytes
            ):
                raise _too_many()
            self.count += 1
            self.reserved += reservation.charged
            self.per_key[keyid] = for_key + 1

    def _exit(self, reservation: _Reservation) -> None:
        keyid = reservation.keyid
        with self._lock:
            self.count -= 1
            self.reserved -= reservation.charged
            left = self.per_key[keyid] - 1
            if left:
                self.per_key[keyid] = left
            else:
                del self.per_key[keyid]

    def grow(self, reservation: _Reservation, charge: int) -> None:
        """Raise ``reservation`` to ``charge`` bytes, or refuse if the budget has no room."""
        with self._lock:
            extra = charge - reservation.charged
            if self.reserved + extra > self.max_bytes:
                raise _too_many()
            self.reserved += extra
            reservation.charged = charge


class _Reservation:
    """The bytes one body read holds in the budget; grows (or is refused) as bytes arrive. Entering
    it takes the slot (or refuses), leaving it gives slot and bytes back, however the read ended."""

    __slots__ = ("_budget", "charged", "keyid")

    def __init__(self, budget: _PendingBudget, charged: int, keyid: str) -> None:
        self._budget = budget
        self.charged = charged
        self.keyid = keyid

    def __enter__(self) -> _Reservation:
        self._budget._enter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._budget._exit(self)

    def cover(self, received: int) -> None:
        """Make sure the bytes received so far are charged: the declared length is a claim, the
        received bytes are a fact (defence in depth behind the framing check in ``screen``)."""
        charge = _charge(received)
        if charge > self.charged:
            self._budget.grow(self, charge)


def _charge(size: int) -> int:
    return 0 if size <= SMALL_BODY else size


def _too_many() -> TooManyPendingBodies:
    return TooManyPendingBodies(
        "too many request bodies are being received right now; retry shortly", retry_after=1
    )


class PreAuthGate:
    """Header screen and bounded body reader for one middleware; see the module docstring."""

    def __init__(
        self,
        trust: TrustStore,
        limits: RequestLimits,
        *,
        mandate_header: str = "ACT-Mandate",
        signature_label: str = "sig1",
    ) -> None:
        self.trust = trust
        self.limits = limits
        self.mandate_header = mandate_header.lower()
        self.signature_label = signature_label
        self._pending = _PendingBudget(limits)

    @property
    def pending_bodies(self) -> int:
        """Bodies being read right now (for tests and metrics)."""
        return self._pending.count

    def screen(self, method: str, headers: Mapping[str, str]) -> McpClientAuthError | str:
        """The error that makes this request hopeless from its headers alone, or the (trusted, not
        yet verified) ``keyid`` it names."""
        screened = self.check(method, headers)
        return screened.keyid if isinstance(screened, Screened) else screened

    def check(self, method: str, headers: Mapping[str, str]) -> McpClientAuthError | Screened:
        """:meth:`screen`, returning the ``keyid`` with the parsed ``Signature-Input``."""
        if method not in VERIFIED_METHODS:  # before anything else: no body is read for it
            return MethodNotAllowed(f"{method} is not served on the MCP endpoint")
        signature_input = headers.get("signature-input")
        if signature_input is None:
            return SignatureMissing("no Signature-Input header", code="signature_missing")
        if self.mandate_header not in headers and not _has_bearer(headers.get("authorization")):
            return SignatureMissing(f"no {self.mandate_header} header", code="mandate_missing")
        screened = self._keyid(signature_input)
        if not isinstance(screened, Screened):
            return screened
        if method in BODY_METHODS:
            if "transfer-encoding" in headers and "content-length" in headers:
                # RFC 9112 §6.3: the length is not to be trusted (a smuggling pattern). The HTTP
                # server lets chunked win, so charging the declared length would under-charge.
                return BodyFramingAmbiguous(
                    "the request carries both Content-Length and Transfer-Encoding; refused"
                )
            declared = _content_length(headers)
            if declared is not None and declared > self.limits.max_body_bytes:
                return BodyTooLarge("the request body exceeds the allowed size")
        return screened

    async def read_body(self, receive: Receive, headers: Mapping[str, str], keyid: str) -> bytes:
        """The whole body within the limits, or raise :class:`BodyTooLarge`, :class:`BodyTimeout`
        or :class:`TooManyPendingBodies`. ``keyid`` is what :meth:`screen` returned. A disconnect
        ends the body early (as before)."""
        limit = self.limits.max_body_bytes
        declared = None if "transfer-encoding" in headers else _content_length(headers)
        reserve = limit if declared is None else min(declared, limit)
        with self._pending.reserve(reserve, keyid) as reservation:
            chunks: list[bytes] = []
            size = 0
            try:
                # anyio.fail_after(body_timeout), without its two generator-based context managers:
                # the same cancel scope, and the same test for "the deadline cancelled it" after.
                with anyio.CancelScope(deadline=anyio.current_time() + self.limits.body_timeout) as scope:
                    # Every receive() runs inside the deadline's scope, its first step included: a
                    # receive() that opens cancel scopes of its own (Starlette's BaseHTTPMiddleware
                    # does) must see them nested in ours, never overlapping (a first step taken
                    # outside the scope once turned every such request into a 500).
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            break
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > limit:
                            raise BodyTooLarge("the request body exceeds the allowed size")
                        reservation.cover(size)  # never hold more than the budget granted
                        chunks.append(chunk)
                        if not message.get("more_body", False):
                            break
            except TimeoutError:
                raise self._timed_out() from None
            if scope.cancelled_caught and anyio.current_time() >= scope.deadline:
                raise self._timed_out()
            # One chunk (the usual case for small JSON-RPC bodies) is passed on without a copy.
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _timed_out(self) -> BodyTimeout:
        return BodyTimeout(f"the request body did not arrive within {self.limits.body_timeout:g} s")

    def _keyid(self, signature_input: str) -> McpClientAuthError | Screened:
        try:
            members = _structured_fields.parse_dictionary(signature_input)
        except _structured_fields.StructuredFieldError:
            return SignatureMalformed("the Signature-Input header is not a valid dictionary")
        member = members.get(self.signature_label)
        if member is None:
            return SignatureMissing(f"no signature labelled {self.signature_label!r}")
        keyid = member[1].get("keyid")
        if not isinstance(keyid, str) or keyid not in self.trust:
            return UnknownKey("the signature names no trusted key")
        return Screened(keyid, ParsedField(signature_input, members))


def _has_bearer(authorization: str | None) -> bool:
    return authorization is not None and authorization[:7].lower() == "bearer "


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value.split(",")[0].strip())
    except ValueError:
        return None  # the HTTP server refuses malformed lengths before we see them
    return length if length >= 0 else None
