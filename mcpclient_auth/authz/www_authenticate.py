"""Parse ``WWW-Authenticate`` (RFC 9110 §11.6.1) and its Bearer challenge (RFC 6750 §3, RFC 9728 §5.1).

    challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
    if challenge and challenge.error == "invalid_token": ...          # re-obtain once
    if challenge and challenge.error == "insufficient_scope":
        wanted = set(token.scopes) | set(challenge.scopes)           # step up once
    challenge.resource_metadata                                      # RFC 9728 metadata URL or None

Garbage in, :class:`~mcpclient_auth.errors.ChallengeMalformed` out: nothing else is ever raised, and
nothing here reflects header text into an error message. Pure module: no I/O, no httpx.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import ChallengeMalformed

__all__ = ["MAX_HEADER_LENGTH", "BearerChallenge", "Challenge", "bearer_challenge", "parse_challenges"]

#: Longer header values are refused before parsing (servers send a few hundred bytes).
MAX_HEADER_LENGTH = 8192

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
# quoted-string (RFC 9110 §5.6.4): qdtext and quoted-pairs, no controls other than HTAB.
_QUOTED = re.compile(r'"((?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*)"')
_OWS = re.compile(r"[ \t]*")
_UNESCAPE = re.compile(r"\\(.)")
# RFC 6749 §3.3 scope-token
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge: ``scheme`` (as sent), lower-cased ``params`` or a ``token68``."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None


@dataclass(frozen=True, slots=True)
class BearerChallenge:
    """The parts of a Bearer challenge that a client acts on."""

    error: str | None = None
    error_description: str | None = None
    scopes: tuple[str, ...] = ()
    resource_metadata: str | None = None
    realm: str | None = None


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ows(self) -> None:
        match = _OWS.match(self.text, self.pos)
        assert match is not None  # the pattern also matches the empty string
        self.pos = match.end()

    def match(self, pattern: re.Pattern[str]) -> re.Match[str] | None:
        found = pattern.match(self.text, self.pos)
        if found is not None:
            self.pos = found.end()
        return found

    def skip_commas(self) -> bool:
        """Skip ``OWS *( "," OWS )``; True if at least one comma was consumed."""
        seen = False
        self.skip_ows()
        while self.peek() == ",":
            seen = True
            self.pos += 1
            self.skip_ows()
        return seen

    def param_ahead(self) -> bool:
        """Is the next list element ``token BWS "="`` followed by a value (not a token68 tail)?"""
        found = _TOKEN.match(self.text, self.pos)
        if found is None:
            return False
        after = _OWS.match(self.text, found.end())
        assert after is not None
        rest = after.end()
        if rest >= len(self.text) or self.text[rest] != "=":
            return False
        # "abc==" or "abc=" then end/comma is a token68, not a parameter.
        value_at = _OWS.match(self.text, rest + 1)
        assert value_at is not None
        nxt = self.text[value_at.end()] if value_at.end() < len(self.text) else ""
        return nxt not in ("", ",", "=")


def _fail(what: str) -> ChallengeMalformed:
    return ChallengeMalformed(f"malformed WWW-Authenticate header: {what}")


def parse_challenges(values: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one header value or in several (``headers.get_list(...)``)."""
    texts = [values] if isinstance(values, str) else list(values)
    challenges: list[Challenge] = []
    for text in texts:
        if not isinstance(text, str):
            raise _fail("not text")
        if len(text) > MAX_HEADER_LENGTH:
            raise _fail("too long")
        challenges.extend(_parse_one(text))
    return challenges


def _parse_one(text: str) -> list[Challenge]:
    scan = _Scanner(text)
    out: list[Challenge] = []
    scan.skip_commas()
    while not scan.at_end():
        scheme = scan.match(_TOKEN)
        if scheme is None:
            raise _fail("expected an auth-scheme")
        start = scan.pos
        scan.skip_ows()
        params: dict[str, str] = {}
        token68: str | None = None
        if not scan.at_end() and scan.peek() != ",":
            if scan.pos == start:
                raise _fail("expected a space after the auth-scheme")
            if scan.param_ahead():
                _read_params(scan, params)
            else:
                found = scan.match(_TOKEN68)
                if found is None:
                    raise _fail("expected token68 or auth-params")
                token68 = found.group(0)
                scan.skip_ows()
                if not scan.at_end() and scan.peek() != ",":
                    raise _fail("unexpected text after token68")
        out.append(Challenge(scheme.group(0), params, token68))
        scan.skip_commas()
    return out


def _read_params(scan: _Scanner, params: dict[str, str]) -> None:
    while True:
        name = scan.match(_TOKEN)
        assert name is not None  # param_ahead() said so
        scan.skip_ows()
        scan.pos += 1  # the "="
        scan.skip_ows()
        value: str
        if scan.peek() == '"':
            quoted = scan.match(_QUOTED)
            if quoted is None:
                raise _fail("unterminated or invalid quoted-string")
            value = _UNESCAPE.sub(r"\1", quoted.group(1))
        else:
            token = scan.match(_TOKEN)
            if token is None:
                raise _fail("expected a token or quoted-string parameter value")
            value = token.group(0)
        key = name.group(0).lower()
        if key in params:
            # RFC 9110: each parameter name occurs once per challenge; two scopes would be ambiguous.
            raise _fail("repeated parameter")
        params[key] = value
        # Another parameter of this challenge follows only after a comma and a "name=" element.
        save = scan.pos
        scan.skip_ows()
        if scan.at_end():
            return
        if scan.peek() != ",":
            raise _fail("expected ',' between parameters")
        scan.skip_commas()
        if scan.at_end() or not scan.param_ahead():
            scan.pos = save  # leave the comma for the challenge loop: a new challenge starts
            return


def bearer_challenge(values: str | Iterable[str] | None, *, scheme: str = "bearer") -> BearerChallenge | None:
    """The first ``Bearer`` challenge (scheme matched case-insensitively), or ``None``. ``scheme="dpop"``
    reads the first ``DPoP`` challenge instead (RFC 9449 §7.1: the same parameters, plus ``algs``).

    ``scope`` is split into scope-tokens; a ``scope`` that is not a list of RFC 6749 scope-tokens, or
    a ``resource_metadata`` that is not an ``https``/``http`` URL, is malformed.
    """
    if values is None:
        return None
    for challenge in parse_challenges(values):
        if challenge.scheme.lower() != scheme:
            continue
        if challenge.token68 is not None:
            raise _fail("a Bearer or DPoP challenge carries auth-params, not token68")
        params = challenge.params
        scope = params.get("scope")
        scopes: tuple[str, ...] = ()
        if scope is not None:
            items = scope.split(" ")
            if not all(_SCOPE_TOKEN.fullmatch(item) for item in items if item):
                raise _fail("invalid scope")
            scopes = tuple(dict.fromkeys(item for item in items if item))
        metadata = params.get("resource_metadata")
        if metadata is not None and not re.match(r"https?://[^\s/?#]+", metadata):
            raise _fail("resource_metadata is not an absolute http(s) URL")
        return BearerChallenge(
            error=params.get("error"),
            error_description=params.get("error_description"),
            scopes=scopes,
            resource_metadata=metadata,
            realm=params.get("realm"),
        )
    return None
