"""The client's per-call fast paths (issue #16, perfclient) give exactly what the strict paths give.

Each test holds one shortcut of the request/response path to the code it replaces, on valid and on
adversarial inputs; none asserts anything about time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth import jose, keys
from mcpclient_auth._encoding import b64url_decode, b64url_encode, compact_json
from mcpclient_auth.errors import ConfigurationError, KeyFormatError, LedgerError, LedgerFormatError
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import ALGORITHMS, Identity
from mcpclient_auth.ledger import GENESIS_PREV, Ledger, line_hash, parse_line

NOW = 1_780_000_000

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _strict_raw(der: bytes) -> bytes:
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


SCALARS = st.one_of(
    st.integers(min_value=1, max_value=P256_ORDER - 1),
    st.integers(min_value=1, max_value=2**64),  # short integers: left padding
    st.sampled_from([1, 0x7F, 0x80, 0xFF, 2**255 - 1, 2**255, 2**256 - 1, P256_ORDER - 1]),
)


@settings(max_examples=3000, deadline=None)
@given(SCALARS, SCALARS)
def test_raw_ecdsa_fast_path_agrees_with_the_strict_path(r: int, s: int) -> None:
    der = encode_dss_signature(r, s)
    assert keys._raw_ecdsa(der) == _strict_raw(der) == r.to_bytes(32, "big") + s.to_bytes(32, "big")


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=80), SCALARS, SCALARS, st.data())
def test_raw_ecdsa_on_malformed_der_does_what_the_strict_path_does(
    noise: bytes, r: int, s: int, data: st.DataObject
) -> None:
    good = encode_dss_signature(r, s)
    # Random bytes, and a valid signature with one byte changed, cut or extended.
    at = data.draw(st.integers(min_value=0, max_value=len(good) - 1))
    candidates = [
        noise,
        good[:at] + bytes([data.draw(st.integers(0, 255))]) + good[at + 1 :],
        good[:at],
        good + noise[:3],
    ]
    for der in candidates:
        try:
            expected: bytes | type[BaseException] = _strict_raw(der)
        except (ValueError, OverflowError) as exc:
            expected = type(exc)
        try:
            got: bytes | type[BaseException] = keys._raw_ecdsa(der)
        except (ValueError, OverflowError) as exc:
            got = type(exc)
        assert got == expected


@pytest.mark.parametrize(
    "der",
    [
        # r = 2**256 (33 significant bytes): the strict path refuses it, the fast path must not truncate
        encode_dss_signature(2**256, 1),
        encode_dss_signature(2**256 + 5, 7),
        # a negative integer (no 0x00 sign pad)
        bytes([0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01]),
        # long-form length
        bytes([0x30, 0x81, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]),
    ],
)
def test_raw_ecdsa_never_accepts_what_does_not_fit_32_bytes(der: bytes) -> None:
    try:
        expected: object = _strict_raw(der)
    except (ValueError, OverflowError) as exc:
        expected = type(exc)
    try:
        got: object = keys._raw_ecdsa(der)
    except (ValueError, OverflowError) as exc:
        got = type(exc)
    assert got == expected
    assert not isinstance(got, bytes) or len(got) == 64


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_identity_signatures_verify_and_the_bound_signer_checks_the_key_type(alg: str) -> None:
    agent = Identity.generate(alg)
    for data in (b"", b"x", b"hello" * 300):
        signature = agent.sign(data)
        assert len(signature) == 64
        assert agent.verify(data, signature)
        assert not agent.verify(data + b"!", signature)
    other = "EdDSA" if alg == "ES256" else "ES256"
    with pytest.raises(KeyFormatError):
        ALGORITHMS[alg].signer(ALGORITHMS[other].generate())
    with pytest.raises(KeyFormatError):
        ALGORITHMS[alg].sign(ALGORITHMS[other].generate(), b"x")


def test_es256_raw_signature_is_the_der_signature_re_encoded() -> None:
    agent = Identity.generate("ES256")
    key = agent.private_key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signature = agent.sign(b"data")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    key.public_key().verify(encode_dss_signature(r, s), b"data", ec.ECDSA(hashes.SHA256()))


# --- the ledger's append_fresh (RunJournal's two lines per call) ----------------------------------


def _fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcpclient_auth.ledger import writer

    monkeypatch.setattr(writer._Timestamps, "now", lambda self: "2026-12-01T19:00:00.000001Z")


LINES: list[tuple[str, str, str | None, str | None, dict[str, object]]] = [
    ("run-1", "ect", "jti-1", "a.b.c", {"method": "tools/call", "id": 1, "url": "http://127.0.0.1/mcp"}),
    ("run-1", "response", "jti-1", None, {"status": 200, "out_hash": "h", "bytes": 3, "id": 1}),
    ("run-2", "denial", None, None, {"code": "x", "text": "é \u2028 \"q\" \\ \x01"}),
    ("run-1", "error", "jti-1", None, {}),
]


def test_append_fresh_writes_the_bytes_append_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_clock(monkeypatch)
    with Ledger(tmp_path / "a.jsonl") as a, Ledger(tmp_path / "b.jsonl") as b:
        for run, kind, jti, token, meta in LINES:
            entry = a.append(run=run, kind=kind, jti=jti, token=token, meta=meta)
            assert b.append_fresh(run, kind, jti, token, dict(meta)) == entry.seq
        assert a.count("run-1") == b.count("run-1") == 3
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    prev = GENESIS_PREV
    for line in (tmp_path / "b.jsonl").read_bytes().splitlines():
        assert parse_line(line).prev == prev
        prev = line_hash(line)


def test_append_fresh_refuses_what_append_refuses(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.jsonl")
    for run, kind, meta in [
        ("r", "seal", {}),
        ("r", "checkpoint", {}),
        ("r", "nonsense", {}),
        (1, "ect", {}),
        ("r", "ect", {"x": float("nan")}),
        ("r", "ect", {"x": object()}),
    ]:
        with pytest.raises(LedgerFormatError):
            ledger.append_fresh(run, kind, None, None, meta)  # type: ignore[arg-type]
        with pytest.raises(LedgerFormatError):
            ledger.append(run=run, kind=kind, meta=meta)  # type: ignore[arg-type]
    with pytest.raises(LedgerFormatError):  # append copies its meta into a dict; append_fresh takes one
        ledger.append_fresh("r", "ect", None, None, ["not", "a", "dict"])  # type: ignore[arg-type]
    assert (tmp_path / "l.jsonl").read_bytes() == b""
    ledger.close()
    with pytest.raises(LedgerError):
        ledger.append_fresh("r", "ect", None, None, {})


# --- one SHA-256 of the body for inp_hash and Content-Digest --------------------------------------


def test_signing_with_the_body_digest_gives_the_same_headers() -> None:
    agent = Identity.generate()
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}'
    signed = []
    for digest in (None, hashlib.sha256(body).digest()):
        request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=body)
        RequestSigner(agent).sign(request, body=body, created=NOW, nonce="n-0123456789", body_sha256=digest)
        signed.append(request.headers)
    assert signed[0]["content-digest"] == signed[1]["content-digest"]
    assert signed[0]["signature-input"] == signed[1]["signature-input"]
    expected = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    assert signed[1]["content-digest"] == expected
    assert agent.verify(b"", agent.sign(b""))  # ECDSA is randomised: signatures compared by verifying


@pytest.mark.parametrize("digest", [b"", b"x" * 31, b"x" * 33, "x" * 32, bytearray(32)])
def test_a_body_digest_that_is_no_sha256_is_refused(digest: object) -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    with pytest.raises(ConfigurationError):
        RequestSigner(Identity.generate()).sign(request, body=b"{}", body_sha256=digest)  # type: ignore[arg-type]
    assert "signature" not in request.headers


def test_a_body_digest_without_its_body_is_refused() -> None:
    request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    with pytest.raises(ConfigurationError):
        RequestSigner(Identity.generate()).sign(request, body_sha256=hashlib.sha256(b"{}").digest())


# --- base64 straight from binascii ------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_b64url_encode_is_the_base64_module_encoding(data: bytes) -> None:
    assert b64url_encode(data) == base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def test_jws_and_signature_headers_keep_their_encoding() -> None:
    agent = Identity.generate()
    token = jose.encode(agent, jose.ECT_TYP, {"iss": "a", "x": "ÿ" * 50, "n": list(range(30))})
    header, payload, signature = token.split(".")
    for part in (header, payload, signature):
        assert "=" not in part and "+" not in part and "/" not in part
    assert b64url_decode(payload) == compact_json({"iss": "a", "x": "ÿ" * 50, "n": list(range(30))})
    assert agent.verify(f"{header}.{payload}".encode(), b64url_decode(signature))
    request = httpx.Request("POST", "http://127.0.0.1:9/mcp", content=b"{}")
    result = RequestSigner(agent).sign(request, body=b"{}")
    nonce = result.params["nonce"]
    assert len(nonce) == 22 and set(nonce) <= set(string.ascii_letters + string.digits + "-_")
    assert f'nonce="{nonce}"' in request.headers["signature-input"]
    assert request.headers["signature"] == f"sig1=:{base64.b64encode(result.signature).decode()}:"
    assert request.headers["content-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(b'{}').digest()).decode()}:"


def test_append_fresh_sees_what_other_writers_appended(tmp_path: Path) -> None:
    """The size check before each line (lseek to the end) notices another writer's lines and a torn
    tail, exactly as the fstat check it replaced: the chain stays whole, the tear is recovered."""
    path = tmp_path / "shared.jsonl"
    a, b = Ledger(path), Ledger(path)
    for i in range(4):
        a.append_fresh("run-a", "ect", f"a{i}", None, {"i": i})
        b.append_fresh("run-b", "ect", f"b{i}", None, {"i": i})
    with open(path, "ab") as raw:
        raw.write(b'{"v":1,"torn')  # a writer died mid-line
    a.append_fresh("run-a", "response", "a3", None, {"status": 200})
    a.close()
    b.close()
    lines = path.read_bytes().splitlines()
    prev = GENESIS_PREV
    for line in lines:
        if line.startswith(b'{"v":1,"torn'):
            continue
        entry = parse_line(line)
        if entry.is_recovery:
            assert entry.meta["torn_bytes"] == len(b'{"v":1,"torn')
        else:
            assert entry.prev == prev
        prev = line_hash(line)
    assert [parse_line(x).seq for x in lines if not x.startswith(b'{"v":1,"torn')] == list(range(1, 11))


# --- the response stream's iterator class reports what the async generator reported ---------------


class _Recorder:
    def __init__(self, fail_on: bytes | None = None) -> None:
        self.events: list[object] = []
        self.fail_on = fail_on

    def feed(self, chunk: bytes) -> None:
        self.events.append(("feed", chunk))
        if chunk == self.fail_on:
            raise LedgerError("disk full")

    def on_eof(self) -> None:
        self.events.append("eof")

    def on_close(self) -> None:
        self.events.append("close")

    def on_error(self, exc: BaseException) -> None:
        self.events.append(("error", type(exc).__name__))


class _Inner:
    def __init__(self, chunks: list[bytes], fail_after: int | None, cancel_after: int | None) -> None:
        self.chunks, self.fail_after, self.cancel_after = chunks, fail_after, cancel_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_after:
                raise httpx.ReadError("connection reset")
            if i == self.cancel_after:
                raise asyncio.CancelledError
            yield chunk

    async def aclose(self) -> None:
        pass


class _GeneratorStream:
    """The wrapper as it was (an async generator), the reference."""

    def __init__(self, inner: _Inner, tracker: _Recorder) -> None:
        self._inner, self._tracker = inner, tracker

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                self._tracker.feed(chunk)
                yield chunk
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._tracker.on_error(exc)
            raise
        self._tracker.on_eof()


async def _consume(stream: Any, stop_after: int | None, again: bool) -> list[object]:
    """Read like httpx does; a reader that stops early closes the iterator, as the event loop's
    finaliser does with a suspended generator (its cancellation at loop shutdown is an artefact of
    async generators: the iterator class has nothing to finalise)."""
    seen: list[object] = []
    for _ in range(2 if again else 1):
        iterator = stream.__aiter__()
        try:
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                seen.append(chunk)
                if stop_after is not None and len(seen) > stop_after:
                    await iterator.aclose()
                    break
        except BaseException as exc:
            seen.append(type(exc).__name__)
        try:  # an ended iterator stays ended
            seen.append(await iterator.__anext__())
        except BaseException as exc:
            seen.append(type(exc).__name__)
    return seen


@settings(max_examples=400, deadline=None)
@given(
    chunks=st.lists(st.sampled_from([b"a", b"bb", b"", b"data: x\n\n"]), max_size=5),
    fail_after=st.one_of(st.none(), st.integers(0, 5)),
    cancel_after=st.one_of(st.none(), st.integers(0, 5)),
    stop_after=st.one_of(st.none(), st.integers(0, 5)),
    fail_on=st.sampled_from([None, b"bb"]),
    again=st.booleans(),
)
def test_the_stream_iterator_reports_what_the_generator_reported(
    chunks: list[bytes],
    fail_after: int | None,
    cancel_after: int | None,
    stop_after: int | None,
    fail_on: bytes | None,
    again: bool,
) -> None:
    from mcpclient_auth._hooks._httpx import AsyncHashingStream

    outcomes = []
    for make in (_GeneratorStream, AsyncHashingStream):
        tracker = _Recorder(fail_on)
        stream = make(_Inner(chunks, fail_after, cancel_after), tracker)  # type: ignore[arg-type]
        seen = asyncio.run(_consume(stream, stop_after, again))
        outcomes.append((seen, tracker.events))
    assert outcomes[0] == outcomes[1]


def test_closing_the_stream_reports_close_and_closes_the_inner_stream() -> None:
    from mcpclient_auth._hooks._httpx import AsyncHashingStream

    closed: list[bool] = []

    class Inner(_Inner):
        async def aclose(self) -> None:
            closed.append(True)

    tracker = _Recorder()
    stream = AsyncHashingStream(Inner([b"a", b"b"], None, None), tracker)  # type: ignore[arg-type]

    async def main() -> None:
        async for _ in stream:
            break
        await stream.aclose()

    asyncio.run(main())
    assert closed == [True] and tracker.events == [("feed", b"a"), "close"]
