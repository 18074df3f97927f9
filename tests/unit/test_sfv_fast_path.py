"""The structured-field fast path (``_structured_fields._fast_dictionary`` / ``_fast_params_text``) agrees with
``http-sf`` on everything it accepts, and hands everything else to it (issue 8 optimisation)."""

from __future__ import annotations

import base64

import http_sf
import pytest
from http_sf.parameters import ser_params
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth import _structured_fields

KEYS = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,6}", fullmatch=True)
STRINGS = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
INTEGERS = st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1)


def _string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def members(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["inner", "binary", "integer", "string", "token", "bare"]))
    if kind == "inner":
        value = "(" + " ".join(_string(s) for s in draw(st.lists(STRINGS, max_size=4))) + ")"
    elif kind == "binary":
        value = ":" + base64.b64encode(draw(st.binary(max_size=40))).decode() + ":"
    elif kind == "integer":
        value = str(draw(INTEGERS))
    elif kind == "string":
        value = _string(draw(STRINGS))
    elif kind == "token":
        value = draw(st.from_regex(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]{0,5}", fullmatch=True))
    else:
        value = ""
    params = "".join(
        f";{k}" + ("" if v is None else f"={v}")
        for k, v in draw(
            st.lists(
                st.tuples(KEYS, st.one_of(st.none(), INTEGERS.map(str), STRINGS.map(_string))), max_size=4
            )
        )
    )
    key = draw(KEYS)
    return f"{key}={value}{params}" if value else f"{key}{params}"


def _slow(data: bytes) -> object:
    def refuse(key: str, context: str) -> None:
        raise ValueError(f"repeated {context} key {key!r}")

    try:
        return http_sf.parse(data, tltype="dictionary", on_duplicate_key=refuse)
    except Exception:
        return "refused"


@settings(max_examples=400, deadline=None)
@given(st.lists(members(), min_size=1, max_size=3), st.sampled_from([", ", ",", " , "]), st.booleans())
def test_fast_dictionary_agrees_with_http_sf(parts: list[str], sep: str, mutate: bool) -> None:
    text = sep.join(parts)
    if mutate:
        text = text.replace("=", "= ", 1)  # whitespace the full parser refuses
    fast = _structured_fields._fast_dictionary(text)
    if fast is not None:
        assert fast == _slow(text.encode())


@pytest.mark.parametrize(
    "text",
    [
        "sig1=:AAB=:",  # non-canonical trailing bits
        "sig1=:AAA:",  # missing padding
        'a=1;x=1;x="y"',  # repeated parameter
        "a=1, a=2",  # repeated key
        'sig1=("@method";req)',  # item parameter
        "a=1.5",
        "a=1,",
        " a=1",
    ],
)
def test_fast_dictionary_defers_unusual_values(text: str) -> None:
    assert _structured_fields._fast_dictionary(text) is None


def test_parse_dictionary_still_refuses_what_http_sf_refuses() -> None:
    with pytest.raises(_structured_fields.StructuredFieldError):
        _structured_fields.parse_dictionary("a=1, a=2")
    with pytest.raises(_structured_fields.StructuredFieldError):
        _structured_fields.parse_dictionary('a=1;x=1;x="y"')


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, st.one_of(INTEGERS, STRINGS, st.just(True)), max_size=5))
def test_fast_params_text_matches_http_sf(params: dict[str, object]) -> None:
    fast = _structured_fields._fast_params_text(params)
    if fast is not None:
        assert fast == ser_params(params)
    assert _structured_fields.serialize_params(params) == ser_params(params)


@pytest.mark.parametrize(
    "text",
    [
        'sig1=("a b" "" "c d e");k=1',  # spaces inside items, an empty item
        'sig1=("");k="v"',
        "sig1=()",
        'sig1=("@method" "@target-uri");created=0001;expires=-0;nonce="a b";keyid="k"',  # non-canonical ints
        "sig1=:AAAA:, sig2=:YWJj:",
        'a="", b=-5;x="1 2"',
    ],
)
def test_fast_dictionary_gives_what_http_sf_gives(text: str) -> None:
    # The fast path reads these itself (no deferring) and must return exactly http-sf's result.
    fast = _structured_fields._fast_dictionary(text)
    assert fast is not None and fast == _slow(text.encode())


def test_the_known_parameter_names_are_sf_keys() -> None:
    # _fast_params_text skips the key pattern for these names: each must match it.
    assert all(type(k) is str and _structured_fields._KEY_TEXT.fullmatch(k) for k in _structured_fields._KNOWN_KEYS)
