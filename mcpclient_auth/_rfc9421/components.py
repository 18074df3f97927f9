"""RFC 9421 §2: messages, component identifiers and the signature base (generic, used for verification).

A message is seen through :class:`HttpMessage`: method, URL, header field lines, body, status and (for a
response) the request it answers. Adapters turn ``httpx.Request`` / ``httpx.Response`` and any object
with ``.method`` / ``.url`` / ``.headers`` / ``.content`` into one (duck-typed; no httpx import here).

    message = HttpMessage.of(request)                    # or HttpMessage(method=..., url=..., headers=[...])
    cid = ComponentId.parse('"@query-param";name="Pet"')
    component_value(message, cid)                        # 'dog'
    signature_base(message, [cid], '("@query-param";name="Pet");created=1')   # bytes

Every failure to resolve or canonicalise a component raises :class:`ComponentError`; values never
appear in messages (they may be credentials), only component names.
"""

from __future__ import annotations

import functools
import re
import types
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from http_sf.retrofit import retrofit as _RETROFIT

from .. import _structured_fields
from ..errors import ComponentError, SignatureMalformed

__all__ = [
    "DERIVED_COMPONENTS",
    "STRUCTURED_FIELDS",
    "ComponentId",
    "HttpMessage",
    "component_value",
    "signature_base",
    "target_uri",
]


#: Structured-field types of fields that may be covered with ``;sf`` (RFC 9421 §2.1.1). The digest and
#: signature fields are dictionaries; the rest are the types ``http-sf`` knows for retrofitted fields.
STRUCTURED_FIELDS: dict[str, str] = {
    **_RETROFIT,
    "content-digest": "dictionary",
    "repr-digest": "dictionary",
    "want-content-digest": "dictionary",
    "want-repr-digest": "dictionary",
    "signature-input": "dictionary",
    "signature": "dictionary",
    "accept-signature": "dictionary",
}

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<path>[^?#]*)"
    r"(?:\?(?P<query>[^#]*))?(?:#.*)?",
    re.DOTALL,
)
# obs-fold (RFC 9112 §5.2): CRLF followed by whitespace continues the previous line; it means one SP.
_OBS_FOLD = re.compile(r"[ \t]*\r\n[ \t]+")
# What may appear in a signature-base value: printable ASCII plus HTAB (RFC 9110 field-content).
_BAD_VALUE_CHAR = re.compile(r"[^\t\x20-\x7e]")


# --- the message view --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Url:
    scheme: str
    authority: str  # host[:port] as written, without userinfo
    host: str
    port: str | None
    path: str
    query: str | None  # None when there is no "?" at all


#: Longer URLs are parsed every time (the cache holds at most 256 URLs of this size).
_CACHED_URL_MAX = 2048


def _parse_url(url: str) -> _Url:
    # A server verifies requests to the same few URLs over and over: each distinct URL is parsed once
    # (the result is immutable; a URL that does not parse raises, and exceptions are not cached). The
    # URL comes from the request (Host, path), so only ordinary-sized ones are kept.
    return _parse_url_cached(url) if len(url) <= _CACHED_URL_MAX else _parse_url_now(url)


@functools.lru_cache(maxsize=256)
def _parse_url_cached(url: str) -> _Url:
    return _parse_url_now(url)


def _parse_url_now(url: str) -> _Url:
    match = _URL.fullmatch(url)
    if match is None:
        raise ComponentError("the message URL is not an absolute http(s) URI")
    authority = match["authority"].rpartition("@")[2]  # userinfo is never part of the target URI
    if authority.startswith("["):
        host, _, rest = authority.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else None
    else:
        host, sep, port_text = authority.partition(":")
        port = port_text if sep else None
    if not host:
        raise ComponentError("the message URL has no host")
    if port is not None and not port.isdigit():
        if port:
            raise ComponentError("the message URL has an invalid port")
        port = None
    return _Url(match["scheme"], authority, host, port, match["path"], match["query"])


def target_uri(url: str) -> str:
    """``@target-uri`` of ``url``: the absolute URI without userinfo and fragment (empty path -> ``/``)."""
    parts = _parse_url(url)
    query = "" if parts.query is None else "?" + parts.query
    return f"{parts.scheme}://{parts.authority}{parts.path or '/'}{query}"


@dataclass(frozen=True)
class HttpMessage:
    """An HTTP message as RFC 9421 sees it.

    ``headers`` is the list of field lines in wire order (names in any case); ``request`` is the
    related request of a response (for ``;req`` components); ``request_target`` overrides the
    ``@request-target`` derived from the URL (absolute-form, ``CONNECT``, ``OPTIONS *``).

        HttpMessage(method="POST", url="https://example.com/foo?param=Value",
                    headers=[("Content-Type", "application/json")], body=b"{}")
    """

    method: str | None = None
    url: str | None = None
    # Field values and the body may hold credentials: keep them out of repr().
    headers: Sequence[tuple[str, str]] = field(default=(), repr=False)
    body: bytes | None = field(default=None, repr=False)
    status: int | None = None
    request: HttpMessage | None = None
    request_target: str | None = None

    @property
    def is_response(self) -> bool:
        return self.status is not None

    @cached_property
    def _fields(self) -> dict[str, list[str]]:
        fields: dict[str, list[str]] = {}
        for name, value in self.headers:
            fields.setdefault(name.lower(), []).append(value)
        return fields

    @cached_property
    def _parsed_url(self) -> _Url:
        if self.url is None:
            raise ComponentError("the message has no URL")
        return _parse_url(self.url)

    def field_lines(self, name: str) -> list[str] | None:
        """The raw values of every field line named ``name`` (case-insensitive), or ``None``."""
        return self._fields.get(name.lower())

    def field_names(self) -> tuple[str, ...]:
        """The lower-case names of the message's fields, each once, in first-seen order."""
        return tuple(self._fields)

    def header(self, name: str) -> str | None:
        """The canonical combined value (RFC 9421 §2.1): lines trimmed, unfolded, joined by ``", "``."""
        lines = self.field_lines(name)
        if lines is None:
            return None
        if len(lines) == 1:  # the usual case: no generator, no join
            return _canonical_line(lines[0])
        return ", ".join(_canonical_line(line) for line in lines)

    @classmethod
    def from_fields(
        cls, *, method: str, url: str, fields: Mapping[str, str], body: bytes | None
    ) -> HttpMessage:
        """A request from header fields already collected in one pass: lower-case name -> its value
        (repeated lines joined with ``", "``, as a server's header mapping holds them). Nothing is
        re-read: the name index is built from ``fields`` directly."""
        message = cls(method=method, url=url, headers=tuple(fields.items()), body=body)
        # Pre-fill the cached index (what _fields would compute from ``headers``: one line per name).
        message.__dict__["_fields"] = {name: [value] for name, value in fields.items()}
        return message

    @classmethod
    def of(cls, message: Any, *, body: bytes | None = None) -> HttpMessage:
        """Adapt ``httpx.Request`` / ``httpx.Response`` / any duck-typed request or response.

        A request needs ``.method``, ``.url`` (``str()`` gives the absolute URI) and ``.headers``; a
        response has ``.status_code`` and, if available, ``.request``. ``body`` overrides ``.content``
        (which is read only when it is already available).
        """
        if isinstance(message, HttpMessage):
            return message if body is None else replace(message, body=body)
        headers = header_pairs(getattr(message, "headers", ()))
        content = body if body is not None else _content_of(message)
        status = getattr(message, "status_code", None)
        if status is not None:
            related = None
            try:
                request = message.request
            except Exception:  # httpx raises RuntimeError when a response has no request
                request = None
            if request is not None:
                related = cls.of(request)
            return cls(headers=headers, body=content, status=int(status), request=related)
        method = getattr(message, "method", None)
        url = getattr(message, "url", None)
        if isinstance(method, bytes):
            method = method.decode("ascii", "replace")
        return cls(
            method=None if method is None else str(method),
            url=None if url is None else str(url),
            headers=headers,
            body=content,
            request_target=getattr(message, "request_target", None),
        )


def header_pairs(headers: Any) -> list[tuple[str, str]]:
    """Field lines of a header container: httpx/starlette ``Headers`` (``multi_items()``), anything
    with ``items()``, or an iterable of ``(name, value)`` pairs; :class:`ComponentError` otherwise."""
    try:
        if hasattr(headers, "multi_items"):
            items: Iterable[Any] = headers.multi_items()
        elif hasattr(headers, "items"):
            items = headers.items()
        else:
            items = headers
        return [(_text(name), _text(value)) for name, value in items]
    except (TypeError, ValueError, AttributeError):
        raise ComponentError("the message headers are not readable as (name, value) pairs") from None


def _text(value: Any) -> str:
    # HTTP field bytes are ISO-8859-1 on the wire; keep every byte representable.
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


def _content_of(message: Any) -> bytes | None:
    try:
        content = message.content
    except Exception:  # an unread httpx stream raises RequestNotRead / ResponseNotRead
        return None
    return bytes(content) if isinstance(content, bytes | bytearray | memoryview) else None


def _canonical_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        value = _OBS_FOLD.sub(" ", value)
    return value.strip(" \t")


def check_value(name: str, value: str) -> str:
    """Refuse a component value that cannot go into a signature base (CR, LF, controls, non-ASCII)."""
    if not (value.isascii() and value.isprintable()) and _BAD_VALUE_CHAR.search(value):
        raise ComponentError(
            f"component {name} holds a character that cannot be signed (CR/LF, control or non-ASCII)"
        )
    return value


# --- component identifiers ---------------------------------------------------------------------------

_NO_PARAMS: frozenset[tuple[str, Any]] = frozenset()
#: The (read-only) parameter map a derived component resolver gets for a parameterless component.
_NO_PARAM_MAP: Mapping[str, Any] = types.MappingProxyType({})

#: Parameters a component identifier may carry, and where (RFC 9421 §2.1, §2.2.8, §2.4).
_FLAG_PARAMS = frozenset({"sf", "bs", "req", "tr"})
_STRING_PARAMS = frozenset({"key", "name"})


@dataclass(frozen=True, slots=True)
class ComponentId:
    """One covered component: a lowercase name (``"@method"``, ``"content-digest"``) and parameters.

    ``text`` is the serialised identifier as it appears in a signature base and in
    ``Signature-Input``; ``identity`` ignores parameter order (for duplicate detection).

        ComponentId.of("@query-param", name="Pet").text    # '"@query-param";name="Pet"'
        ComponentId.parse('"content-digest";req')
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    text: str = ""

    @classmethod
    def of(cls, name: str, **params: Any) -> ComponentId:
        return cls.from_item(name, params)

    @classmethod
    def from_item(cls, name: Any, params: Mapping[str, Any]) -> ComponentId:
        """From a parsed structured-field item; raises a typed error when it is not a component id."""
        if not params and type(name) is str and len(name) <= 256:
            # the common case, validated and serialised once per name (ordinary-sized names only:
            # they come from the request, and the cache must not hold large strings)
            return _plain_component(name)
        return cls._build(name, params)

    @classmethod
    def _build(cls, name: Any, params: Mapping[str, Any]) -> ComponentId:
        if type(name) is not str or not name:
            raise SignatureMalformed("a covered component must be a non-empty sf-string")
        if name != name.lower() or not (name.isascii() and name.isprintable()) or " " in name:
            raise SignatureMalformed("a covered component name must be lowercase printable ASCII")
        if name == "@signature-params":
            raise SignatureMalformed('"@signature-params" cannot be a covered component')
        for key, value in params.items():
            if key in _FLAG_PARAMS:
                if value is not True:
                    raise ComponentError(f"component parameter {key!r} must be a bare flag")
            elif key in _STRING_PARAMS:
                if type(value) is not str:
                    raise ComponentError(f"component parameter {key!r} must be an sf-string")
            else:
                raise ComponentError(f"unsupported component parameter {key!r}")
        _check_combination(name, params)
        items = tuple(params.items())
        try:
            text = _structured_fields.sf_string(name) + _structured_fields.serialize_params(dict(items))
        except _structured_fields.StructuredFieldError:
            raise ComponentError("component parameter value cannot be serialised") from None
        return cls(name, items, text)

    @classmethod
    def parse(cls, text: str) -> ComponentId:
        """From a serialised identifier (``'"@query-param";name="Pet"'``) or a bare name (``"date"``)."""
        if not text.startswith('"'):
            return cls.from_item(text, {})
        try:
            parsed = _structured_fields.parse_dictionary("c=" + text)["c"]
        except (_structured_fields.StructuredFieldError, KeyError):
            raise SignatureMalformed("not a serialised component identifier") from None
        bare, params = parsed
        if isinstance(bare, list):
            raise SignatureMalformed("not a serialised component identifier")
        return cls.from_item(bare, params)

    @property
    def param_map(self) -> dict[str, Any]:
        return dict(self.params) if self.params else {}

    @property
    def identity(self) -> tuple[str, frozenset[tuple[str, Any]]]:
        # Read dozens of times per verified request (coverage and duplicate checks); most components
        # have no parameters, so share one empty set instead of building one per read.
        return self.name, frozenset(self.params) if self.params else _NO_PARAMS

    @property
    def is_derived(self) -> bool:
        return self.name.startswith("@")

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=1024)
def _plain_component(name: str) -> ComponentId:
    return ComponentId._build(name, {})


def _check_combination(name: str, params: Mapping[str, Any]) -> None:
    derived = name.startswith("@")
    if derived:
        if name not in DERIVED_COMPONENTS:
            raise ComponentError(f"unknown derived component {name!r}")
        for key in ("sf", "bs", "key", "tr"):
            if key in params:
                raise ComponentError(f"parameter {key!r} does not apply to derived component {name!r}")
        if (name == "@query-param") != ("name" in params):
            raise ComponentError('"@query-param" needs exactly the "name" parameter')
        return
    if "name" in params:
        raise ComponentError('parameter "name" applies only to "@query-param"')
    if "bs" in params and ("sf" in params or "key" in params):
        raise ComponentError('parameter "bs" cannot be combined with "sf" or "key"')
    if "tr" in params:
        raise ComponentError("trailer fields are not supported")


# --- component values ---------------------------------------------------------------------------------


def _method(message: HttpMessage, params: Mapping[str, Any]) -> str:
    if not message.method:
        raise ComponentError("the message has no method")
    return message.method


def _target_uri(message: HttpMessage, params: Mapping[str, Any]) -> str:
    url = message._parsed_url
    query = "" if url.query is None else "?" + url.query
    return f"{url.scheme}://{url.authority}{url.path or '/'}{query}"


def _authority(message: HttpMessage, params: Mapping[str, Any]) -> str:
    url = message._parsed_url
    port = url.port
    if port is not None and (not port or port.lstrip("0") == _DEFAULT_PORTS.get(url.scheme.lower())):
        port = None
    host = url.host.lower()
    return host if port is None else f"{host}:{port}"


def _scheme(message: HttpMessage, params: Mapping[str, Any]) -> str:
    return message._parsed_url.scheme.lower()


def _request_target(message: HttpMessage, params: Mapping[str, Any]) -> str:
    if message.request_target is not None:
        return message.request_target
    url = message._parsed_url
    if message.method == "CONNECT":
        return url.authority
    return (url.path or "/") + ("" if url.query is None else "?" + url.query)


def _path(message: HttpMessage, params: Mapping[str, Any]) -> str:
    return message._parsed_url.path or "/"


def _query(message: HttpMessage, params: Mapping[str, Any]) -> str:
    return "?" + (message._parsed_url.query or "")


def _form_encode(text: str) -> str:
    # RFC 9421 §2.2.8: the WHATWG urlencoded percent-encode set, but a space is %20 (not "+").
    return urllib.parse.quote(text, safe="*").replace("~", "%7E")


def _query_param(message: HttpMessage, params: Mapping[str, Any]) -> str:
    wanted = params["name"]
    values: list[str] = []
    for pair in (message._parsed_url.query or "").split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _form_encode(urllib.parse.unquote_plus(raw_name))
        if name == wanted:
            values.append(_form_encode(urllib.parse.unquote_plus(raw_value)))
    if not values:
        raise ComponentError("the covered query parameter is absent")
    if len(values) > 1:
        # RFC 9421 §2.2.8: a repeated parameter cannot be covered by name (sign @query instead).
        raise ComponentError("the covered query parameter occurs more than once")
    return values[0]


def _status(message: HttpMessage, params: Mapping[str, Any]) -> str:
    if message.status is None:
        raise ComponentError('"@status" is only defined for responses')
    if not 100 <= message.status <= 999:
        raise ComponentError("the response status is not a three-digit code")
    return str(message.status)


#: The derived components of RFC 9421 §2.2, by name.
DERIVED_COMPONENTS: dict[str, Any] = {
    "@method": _method,
    "@target-uri": _target_uri,
    "@authority": _authority,
    "@scheme": _scheme,
    "@request-target": _request_target,
    "@path": _path,
    "@query": _query,
    "@query-param": _query_param,
    "@status": _status,
}


def _field_value(
    message: HttpMessage, cid: ComponentId, params: Mapping[str, Any], structured: Mapping[str, str]
) -> str:
    lines = message.field_lines(cid.name)
    if lines is None:
        raise ComponentError(f"covered field {cid.name!r} is absent from the message")
    canonical = [_canonical_line(line) for line in lines]
    if "bs" in params:
        try:
            return ", ".join(_structured_fields.sf_bytes(line.encode("latin-1")) for line in canonical)
        except UnicodeEncodeError:
            raise ComponentError(f"field {cid.name!r} cannot be byte-wrapped") from None
    combined = ", ".join(canonical)
    try:
        if "key" in params:
            members = _structured_fields.parse_as(combined, "dictionary")
            member = members.get(params["key"])
            if member is None:
                raise ComponentError(f"field {cid.name!r} has no covered dictionary member")
            return _structured_fields.serialize_member(member)
        if "sf" in params:
            kind = structured.get(cid.name)
            if kind is None:
                raise ComponentError(f"field {cid.name!r} has no known structured type for ';sf'")
            return _structured_fields.serialize_structured(_structured_fields.parse_as(combined, kind))
    except _structured_fields.StructuredFieldError:
        raise ComponentError(f"field {cid.name!r} is not a valid structured field") from None
    return combined


def component_value(
    message: HttpMessage, cid: ComponentId, *, structured_fields: Mapping[str, str] | None = None
) -> str:
    """The canonical value of one component in ``message`` (RFC 9421 §2); :class:`ComponentError`."""
    params = cid.param_map
    if "req" in params:
        if not message.is_response:
            raise ComponentError('";req" is only defined in a response signature')
        if message.request is None:
            raise ComponentError('";req" needs the request the response answers')
        message = message.request
    if cid.is_derived:
        if message.is_response and cid.name != "@status":
            raise ComponentError(f"{cid.name!r} needs ';req' in a response signature")
        value = DERIVED_COMPONENTS[cid.name](message, params)
    else:
        value = _field_value(message, cid, params, structured_fields or STRUCTURED_FIELDS)
    return check_value(cid.text, value)


def signature_base(
    message: HttpMessage,
    components: Sequence[ComponentId],
    signature_params: str,
    *,
    structured_fields: Mapping[str, str] | None = None,
) -> bytes:
    """The RFC 9421 §2.5 signature base: one line per component, then ``"@signature-params"``.

    ``signature_params`` is the serialised inner list with its parameters, exactly as it appears in
    ``Signature-Input`` after the label. Lines are joined by LF with no trailing newline.
    """
    lines: list[str] = []
    seen: set[tuple[str, frozenset[tuple[str, Any]]]] = set()
    # Verification builds a base per request, almost always of parameterless components of a
    # request: those are resolved inline below (what component_value does for them, step by step);
    # anything else — parameters, a response, an unknown or absent component — takes the general
    # path. tests/unit/test_rfc9421_signature_base_fast.py holds the two to the same output.
    fields = message._fields
    is_request = message.status is None
    for cid in components:
        identity = cid.identity
        if identity in seen:
            raise SignatureMalformed(f"component {cid.text} is covered twice")
        seen.add(identity)
        name = cid.name
        value: str | None = None
        if not cid.params and is_request:
            if name.startswith("@"):
                resolve = DERIVED_COMPONENTS.get(name)
                if resolve is not None:
                    value = resolve(message, _NO_PARAM_MAP)
            else:
                field_lines = fields.get(name)
                if field_lines is not None:
                    if len(field_lines) == 1:
                        value = _canonical_line(field_lines[0])
                    else:
                        value = ", ".join([_canonical_line(line) for line in field_lines])
            if value is not None and not (value.isascii() and value.isprintable()):
                check_value(cid.text, value)  # raises on CR, LF, controls, non-ASCII
        if value is None:  # parameters, a response, or something the general path must judge
            value = component_value(message, cid, structured_fields=structured_fields)
        lines.append(f"{cid.text}: {value}")
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode("ascii")
