"""scope.EndpointSet: which requests a run signs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mcpclient_auth.act import Mandate
from mcpclient_auth.endpoints import EndpointSet, MetadataCollector, canonical_url, sent_url
from mcpclient_auth.errors import ConfigurationError, EndpointInvalid
from mcpclient_auth.keys import Identity
from mcpclient_auth.run import AgentRun


def test_exact_endpoint_trailing_slash_and_query_match() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/mcp")
    for url in ("http://127.0.0.1:8000/mcp", "http://127.0.0.1:8000/mcp/", "HTTP://127.0.0.1:8000/mcp?x=1"):
        endpoint = scope.match(url)
        assert endpoint is not None and endpoint.url == "http://127.0.0.1:8000/mcp"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8001/mcp",  # other port
        "https://127.0.0.1:8000/mcp",  # other scheme
        "http://localhost:8000/mcp",  # other host
        "http://127.0.0.1:8000/mcp/extra",
        "http://127.0.0.1:8000/.well-known/oauth-protected-resource/mcp",  # passes, but unsigned
        "http://127.0.0.1:8000/.well-known/oauth-authorization-server",
        "http://127.0.0.1:8000/token",
        "http://127.0.0.1:8000/register",
        "http://127.0.0.1:8000/",
        "not a url",
        "ftp://127.0.0.1:8000/mcp",
    ],
)
def test_everything_else_is_out_of_scope(url: str) -> None:
    assert EndpointSet("http://127.0.0.1:8000/mcp").match(url) is None


def test_default_ports_are_normalised() -> None:
    scope = EndpointSet("https://mcp.example/mcp")
    assert scope.match("https://MCP.example:443/mcp") is not None
    assert scope.match("http://mcp.example/mcp") is None


def test_legacy_sse_endpoint_covers_its_messages_path() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/app/sse")
    assert scope.match("http://127.0.0.1:8000/app/sse") is not None
    assert scope.match("http://127.0.0.1:8000/app/messages/?session_id=abc") is not None
    assert scope.match("http://127.0.0.1:8000/messages/") is None


def test_several_endpoints() -> None:
    scope = EndpointSet(["http://a.example/mcp", "http://b.example/other"])
    assert scope.match("http://b.example/other").url == "http://b.example/other"  # type: ignore[union-attr]
    assert scope.urls == ["http://a.example/mcp", "http://b.example/other"]


@pytest.mark.parametrize(
    "bad", [[], "", "relative/path", "http://user:pw@a.example/mcp", "http://a.example/mcp#frag", "file:///x"]
)
def test_bad_endpoints_are_configuration_errors(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        EndpointSet(bad)  # type: ignore[arg-type]


# --- issue 12, finding 4: one canonical endpoint, exactly as httpx / httpx2 send it ------------------

SPELLINGS = [
    "http://h.example:8000/./mcp",
    "http://h.example:8000/x/../mcp",
    "HTTP://LOCALHOST:8000/mcp",
    "http://127.0.0.1:80/mcp",
    "https://mcp.example:443/mcp",
    "http://a.example:0080/mcp",
    "http://a.example",
    "https://a.example:443",
    "http://a.example/mcp/",
    "http://a.example/a/b/../../../c",
    "http://a.example/..",
    "http://a.example/a/.",
    "http://a.example/m%7ecp",
    "http://a.example/m cp",
    "http://a.example/ä/{x}/`q`",
    "http://a.example/%2e/mcp",
    "http://[::1]:80/mcp",
    "http://A.Example:8080/MCP?x=1",
]


def _as_sent(module: object, url: str) -> str:
    request = module.Request("POST", url)  # type: ignore[attr-defined]
    sent = request.url
    return f"{sent.scheme}://{sent.netloc.decode('ascii')}{sent.raw_path.decode('ascii').partition('?')[0]}"


@pytest.mark.parametrize("library", ["httpx", "httpx2"])
@pytest.mark.parametrize("url", SPELLINGS)
def test_canonical_url_is_what_the_http_library_sends(library: str, url: str) -> None:
    module = pytest.importorskip(library)
    # httpx keeps an explicit default port under an upper-case scheme (the hook then sends the
    # canonical form, see test_the_hook_sends_the_canonical_uri); every other spelling is sent as is.
    assert canonical_url(url) == _as_sent(module, url.replace("HTTP://", "http://"))


def test_explicit_default_ports_are_dropped() -> None:
    assert canonical_url("http://127.0.0.1:80/mcp") == "http://127.0.0.1/mcp"
    assert canonical_url("HTTPS://MCP.Example:443/mcp") == "https://mcp.example/mcp"
    assert canonical_url("http://127.0.0.1:443/mcp") == "http://127.0.0.1:443/mcp"  # not http's default
    assert canonical_url("HTTP://LOCALHOST:80/x/../mcp") == "http://localhost/mcp"
    assert sent_url("HTTP://LOCALHOST:80/mcp?a=b c") == "http://localhost/mcp?a=b%20c"


@pytest.mark.parametrize(
    "spelling",
    [
        "http://h.example:8000/./mcp",
        "http://h.example:8000/x/../mcp",
        "HTTP://H.EXAMPLE:8000/mcp",
        "http://h.example:08000/mcp",
    ],
)
def test_every_spelling_is_one_endpoint(spelling: str) -> None:
    scope = EndpointSet(spelling)
    assert scope.urls == ["http://h.example:8000/mcp"]
    assert scope.match("http://h.example:8000/mcp").url == "http://h.example:8000/mcp"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("http://user:pw@a.example/mcp", "userinfo"),
        ("http://a.example/mcp#frag", "fragment"),
        ("ftp://a.example/mcp", "scheme"),
        ("ws://a.example/mcp", "scheme"),
        ("http://bücher.example/mcp", "non-ASCII host"),
        ("http://a.example:0/mcp", "port"),
        ("http://a.example:70000/mcp", "port"),
        ("http://a.example:8o/mcp", "port"),
        ("http://a.example/m\tcp", "control"),
        ("http:///mcp", "no host"),
        ("http://[::g]/mcp", "IPv6"),
        ("http://999.1.1.1/mcp", "IPv4"),
    ],
)
def test_endpoints_that_cannot_be_normalised_are_refused_typed(bad: str, reason: str) -> None:
    with pytest.raises(EndpointInvalid) as info:
        EndpointSet(bad)
    assert info.value.code == "endpoint_invalid" and reason in info.value.message
    assert "pw" not in info.value.message  # never echo credentials


def test_agent_run_refuses_an_endpoint_it_cannot_normalise(tmp_path: Path) -> None:
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    with pytest.raises(EndpointInvalid):
        AgentRun(
            agent=agent,
            issuer=user,
            purpose="p",
            capabilities=[],
            endpoint="http://u:p@h.example/mcp",
            ledger=tmp_path / "l.jsonl",
        )
    assert not (tmp_path / "l.jsonl").exists()  # refused before anything was written


def test_agent_run_uses_the_canonical_form_everywhere(tmp_path: Path) -> None:
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    with AgentRun(
        agent=agent,
        issuer=user,
        purpose="p",
        capabilities=[],
        endpoint="HTTP://H.example:80/x/../mcp",
        ledger=tmp_path / "l.jsonl",
    ) as run:
        assert run.endpoints == ["http://h.example/mcp"]
        assert run.mandate.aud == ["http://h.example/mcp"]
        assert run.signer_for(run.endpoint_set.endpoints[0])._audience == "http://h.example/mcp"


def test_a_mandate_spelling_its_endpoint_differently_is_refused(tmp_path: Path) -> None:
    user, agent = Identity.generate("ES256", name="alice"), Identity.generate("ES256", name="agent")
    mandate = Mandate.issue(
        user, agent=agent, audience="http://h.example:80/./mcp", purpose="p", capabilities=[]
    )
    with pytest.raises(ConfigurationError, match="exact strings"):
        AgentRun(agent=agent, mandate=mandate, endpoint="http://h.example/mcp", ledger=tmp_path / "l.jsonl")


# --- the guard fails closed ------------------------------------------------------------------------


def test_same_origin_paths_outside_the_endpoints_are_refused() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/mcp")
    for url in (
        "http://127.0.0.1:8000/admin",
        "http://127.0.0.1:8000/",
        "http://127.0.0.1:8000/mcp/extra",
        "HTTP://127.0.0.1:8000/%6Dcp",
        "http://u@127.0.0.1:8000/mcp",
        "http://127.0.0.1:8000/token",
    ):
        assert scope.classify(url).kind == "refuse", url
    for url in ("http://127.0.0.1:8001/mcp", "http://localhost:8000/admin", "https://127.0.0.1:8000/mcp"):
        assert scope.classify(url).kind == "other", url


@pytest.mark.parametrize(
    ("path", "learns"),
    [
        ("/.well-known/oauth-protected-resource", False),
        ("/.well-known/oauth-protected-resource/mcp", False),
        ("/.well-known/oauth-authorization-server", True),
        ("/.well-known/oauth-authorization-server/tenant", True),
        ("/.well-known/openid-configuration", True),
        ("/tenant/.well-known/openid-configuration", True),
    ],
)
def test_oauth_discovery_on_the_run_origin_passes(path: str, learns: bool) -> None:
    verdict = EndpointSet("http://127.0.0.1:8000/mcp").classify(f"http://127.0.0.1:8000{path}")
    assert verdict.kind == "oauth" and verdict.metadata is learns


def test_token_and_registration_endpoints_are_learned_from_server_metadata() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/mcp")
    assert scope.classify("http://127.0.0.1:8000/oauth/token").kind == "refuse"
    document = {
        "issuer": "http://127.0.0.1:8000",
        "token_endpoint": "http://127.0.0.1:8000/oauth/token",
        "registration_endpoint": "http://127.0.0.1:8000/oauth/register",
        "authorization_endpoint": "http://127.0.0.1:8000/oauth/authorize",  # a browser visits it
        "revocation_endpoint": "http://127.0.0.1:8000/oauth/revoke",
    }
    scope.learn_server_metadata(json.dumps(document).encode())
    assert scope.classify("http://127.0.0.1:8000/oauth/token").kind == "oauth"
    assert scope.classify("http://127.0.0.1:8000/oauth/register/").kind == "oauth"
    assert scope.classify("http://127.0.0.1:8000/oauth/authorize").kind == "refuse"
    assert scope.classify("http://127.0.0.1:8000/oauth/revoke").kind == "refuse"


def test_metadata_cannot_unsign_an_endpoint_or_reach_other_origins() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/mcp")
    scope.learn_server_metadata(json.dumps({"token_endpoint": "http://127.0.0.1:8000/mcp"}).encode())
    scope.learn_server_metadata(json.dumps({"token_endpoint": "http://127.0.0.1:9/x"}).encode())
    scope.learn_server_metadata(b"not json")
    scope.learn_server_metadata(b"[1]")
    assert scope.classify("http://127.0.0.1:8000/mcp").kind == "endpoint"
    assert scope._learned == frozenset()


def test_the_metadata_collector_is_bounded() -> None:
    scope = EndpointSet("http://127.0.0.1:8000/mcp")
    document = json.dumps({"token_endpoint": "http://127.0.0.1:8000/t", "pad": "x" * 70_000}).encode()
    big = MetadataCollector(scope)
    big.feed(document[:40_000])
    big.feed(document[40_000:])
    big.on_eof()
    assert scope.classify("http://127.0.0.1:8000/t").kind == "refuse"  # too large: ignored
    cut = MetadataCollector(scope)
    cut.feed(json.dumps({"token_endpoint": "http://127.0.0.1:8000/t"}).encode())
    cut.on_close()  # the client stopped reading: nothing learned
    assert scope.classify("http://127.0.0.1:8000/t").kind == "refuse"
    whole = MetadataCollector(scope)
    whole.feed(json.dumps({"token_endpoint": "http://127.0.0.1:8000/t"}).encode())
    whole.on_eof()
    assert scope.classify("http://127.0.0.1:8000/t").kind == "oauth"
