"""Security rules written once (architecture review §5), checked from the package's source.

A rule written twice drifts: the two ES256 verifiers caught different exceptions, the strict JSON
decoders had different ``NaN`` policies. Each check below names the one home of a rule and fails
when a second copy appears elsewhere.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import mcpclient_auth
from mcpclient_auth import policy, refusal
from mcpclient_auth.ledger import reader, render

PACKAGE = Path(mcpclient_auth.__file__).parent


def _trees() -> Iterator[tuple[str, ast.AST]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


TREES = list(_trees())


def _where(predicate: object) -> set[str]:
    found: set[str] = set()
    for name, tree in TREES:
        if any(predicate(node) for node in ast.walk(tree)):  # type: ignore[operator]
            found.add(name)
    return found


def test_strict_json_decoding_lives_in_encoding_only() -> None:
    # Duplicate-member and NaN refusal: one JSONDecoder, in _encoding.strict_json_loads.
    def configures_a_decoder(node: ast.AST) -> bool:
        return isinstance(node, ast.keyword) and node.arg in ("object_pairs_hook", "parse_constant")

    assert _where(configures_a_decoder) == {"_encoding.py"}


def test_base64url_decoding_lives_in_encoding_only() -> None:
    def decodes_base64url(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr in ("a2b_base64", "urlsafe_b64decode")

    assert _where(decodes_base64url) == {"_encoding.py"}


def test_the_session_action_prefix_is_spelled_once() -> None:
    def spells_it(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in ("mcp.rpc.", "mcp.rpc.response")

    assert _where(spells_it) == {"policy.py"}
    assert policy.McpActionPolicy.SESSION_PREFIX == "mcp.rpc."
    assert policy.McpActionPolicy.RESPONSE_ACTION == "mcp.rpc.response"


def test_the_safe_code_pattern_is_compiled_once() -> None:
    def compiles_it(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value == "[A-Za-z0-9_.:-]{1,64}"

    assert _where(compiles_it) == {"authz/base.py"}


def test_the_ledger_reads_unverified_claims_in_one_place() -> None:
    def decodes_a_token(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "decode"
            and ast.unparse(node.func.value) == "jose"
        )

    assert {name for name in _where(decodes_a_token) if name.startswith("ledger/")} == {"ledger/reader.py"}
    assert vars(render)["unverified_claims"] is reader.unverified_claims


def test_adapters_check_urls_and_map_refusals_through_one_function() -> None:
    adapters = PACKAGE / "adapters"
    for path in adapters.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "endpoint_set.match(" not in source, f"{path.name}: use AgentRun.endpoint_url()"
        assert "model_dump(" not in source, f"{path.name}: use refusal.refusal_from_error()"
    assert callable(refusal.refusal_from_error)
