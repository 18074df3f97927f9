"""signature_base resolves parameterless request components inline; held here to the general path
(``component_value`` per component, as it was built before) on generated and hostile messages."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth._rfc9421 import ComponentId, HttpMessage, component_value, signature_base
from mcpclient_auth.errors import SignatureMalformed


def reference_base(message: HttpMessage, components: list[ComponentId], params: str) -> bytes:
    """signature_base as it was (main at 56f849f): the general path for every component."""
    lines: list[str] = []
    seen: set[Any] = set()
    for cid in components:
        if cid.identity in seen:
            raise SignatureMalformed(f"component {cid.text} is covered twice")
        seen.add(cid.identity)
        lines.append(f"{cid.text}: {component_value(message, cid)}")
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode("ascii")


_COMPONENTS = [
    ComponentId.parse(text)
    for text in (
        '"@method"', '"@target-uri"', '"@authority"', '"@scheme"', '"@request-target"', '"@path"', '"@query"',
        '"@query-param";name="a"', '"@status"', '"@method";req', '"content-type";req', '"x-a"', '"content-type"',
        '"act-mandate"', '"x-a";bs', '"x-a";sf', '"signature";key="sig1"', '"signature";sf', '"x-missing"',
    )
] + [
    # Built directly, bypassing validation: the inline path must not judge them differently.
    ComponentId("X-A", (), '"X-A"'),
    ComponentId("@bogus", (), '"@bogus"'),
    ComponentId("", (), '""'),
]  # fmt: skip

_VALUES = st.one_of(
    st.sampled_from(["application/json", " padded\t", "a,\r\n  folded", "bad\r\nline", "tab\there", "é", "sig1=:AAAA:",
                     '"quoted"', "", "x\x00y", "1, 2"]),
    st.text(max_size=12),
)  # fmt: skip
_NAMES = st.sampled_from(["Content-Type", "content-type", "x-a", "X-A", "act-mandate", "signature", "@method", ""])
_URLS = st.sampled_from([
    "https://hr.example/mcp", "http://127.0.0.1:8000/mcp?a=1&a=2", "https://user@h.example:443/p?a=%20b#f",
    "https://[::1]:8/x", "not a url", "https://h.example", "https://h.example:x/",
])  # fmt: skip


@st.composite
def messages(draw: Any) -> HttpMessage:
    headers = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=5))
    method = draw(st.sampled_from(["POST", "GET", "CONNECT", None, ""]))
    url = draw(st.one_of(st.none(), _URLS))
    kind = draw(st.sampled_from(["request", "from_fields", "response"]))
    if kind == "from_fields" and url is not None and method:
        fields: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            fields[key] = f"{fields[key]}, {value}" if key in fields else value
        return HttpMessage.from_fields(method=method, url=url, fields=fields, body=b"")
    request = HttpMessage(method=method, url=url, headers=headers, body=b"")
    if kind == "response":
        status = draw(st.sampled_from([200, 42, 1000]))
        return HttpMessage(headers=headers, status=status, request=draw(st.sampled_from([None, request])))
    return request


def outcome(build: Any, message: HttpMessage, components: list[ComponentId]) -> Any:
    try:
        return build(message, components, '("x");created=1')
    except Exception as exc:  # the same exception type and message, whatever it is
        return type(exc), str(exc)


@settings(max_examples=1500, deadline=None)
@given(message=messages(), components=st.lists(st.sampled_from(_COMPONENTS), max_size=6))
def test_the_inline_path_builds_the_base_the_general_path_builds(
    message: HttpMessage, components: list[ComponentId]
) -> None:
    assert outcome(signature_base, message, components) == outcome(reference_base, message, components)


def test_the_common_request_is_built_inline_and_equal() -> None:
    message = HttpMessage(
        method="POST",
        url="https://hr.example/mcp",
        headers=[("Content-Type", " application/json "), ("X-A", "1"), ("x-a", "2")],
        body=b"{}",
    )
    components = [ComponentId.parse(t) for t in ('"@method"', '"@target-uri"', '"content-type"', '"x-a"')]
    base = signature_base(message, components, "p")
    assert base == reference_base(message, components, "p")
    assert base.split(b"\n")[2:4] == [b'"content-type": application/json', b'"x-a": 1, 2']


def test_a_cached_component_list_is_the_one_the_general_loop_builds_and_failures_repeat() -> None:
    from mcpclient_auth._rfc9421 import parse_signature_fields
    from mcpclient_auth.errors import ComponentError

    text = 'sig1=("@method" "@target-uri" "content-type");created=1;keyid="k"'
    first = parse_signature_fields(text, "sig1=:AAAA:")["sig1"].components
    again = parse_signature_fields(text, "sig1=:AAAA:")["sig1"].components
    assert first == again == tuple(ComponentId.parse(c) for c in ('"@method"', '"@target-uri"', '"content-type"'))
    for bad, error in (
        ('sig1=("@method" "@method");keyid="k"', SignatureMalformed),
        ('sig1=("@Method");keyid="k"', SignatureMalformed),
        ('sig1=("@bogus");keyid="k"', ComponentError),
    ):
        for _ in range(2):  # a failure is never cached as a success
            try:
                parse_signature_fields(bad, "sig1=:AAAA:")
            except error:
                pass
            else:
                raise AssertionError(f"{bad} was accepted")


def test_the_caches_keep_only_ordinary_sized_request_strings() -> None:
    # Component names and URLs come from the request: long ones are resolved every time, never kept.
    from mcpclient_auth._rfc9421 import components, parse_signature_fields, signatures

    long_names = " ".join(f'"x-{i:04d}-{"a" * 300}"' for i in range(8))
    text = f'sig1=("@method" {long_names});created=1;keyid="k"'
    assert len(text) > signatures._CACHED_INPUT_MAX
    before = (signatures._plain_components.cache_info().currsize, components._plain_component.cache_info().currsize)
    first = parse_signature_fields(text, "sig1=:AAAA:")["sig1"]
    assert first.components == parse_signature_fields(text, "sig1=:AAAA:")["sig1"].components
    assert [c.name for c in first.components][1].startswith("x-0000-aaa")
    after = (signatures._plain_components.cache_info().currsize, components._plain_component.cache_info().currsize)
    assert after[0] == before[0] and after[1] <= before[1] + 1  # at most "@method"
    url = "https://h.example/" + "p" * 3000
    cached = components._parse_url_cached.cache_info().currsize
    message = HttpMessage(method="GET", url=url)
    assert signature_base(message, [ComponentId.parse('"@target-uri"')], "p").endswith(b"p" * 3000 + b'\n"@signature-params": p')
    assert components._parse_url_cached.cache_info().currsize == cached
