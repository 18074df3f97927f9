"""``mcpclient-auth mandate ...`` and ``mcpclient-auth token ...``: issue, decode and verify tokens.

    mcpclient-auth mandate issue --issuer-key keys/user.jwk --agent-key keys/agent.jwk \\
        --aud http://127.0.0.1:8000/mcp --purpose "Answer HR questions" --cap mcp.search [--ttl 900] \
        [--jwks keys/jwks.json] [--iss NAME]
    mcpclient-auth token decode TOKEN|-            header and claims, marked unverified
    mcpclient-auth token verify TOKEN|- --jwks keys/jwks.json [--aud AUD]

``-`` reads the token from standard input. ``token verify`` exits 0 when the token is valid, 1 when
it is not (printing the error code and message, never the token), 2 on usage errors — including a
key set without roles for a mandate or record (``mcpclient-auth keys trust`` adds them).
``mandate issue`` refuses the agent's own key as issuer and, given ``--jwks``, any key the trust file
does not register as issuer for the mandate's ``iss`` (the key's name, or ``--iss``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from .. import jose
from .._claims import check_audience
from ..act import DEFAULT_MANDATE_TTL, ExecutionRecord, Mandate
from ..ect import ExecutionContextToken
from ..errors import (
    InvalidTokenType,
    KeyBindingMismatch,
    KeyFormatError,
    McpClientAuthError,
    RecordMandateMissing,
)
from ..keys import Identity, PublicKey, TrustStore
from .keys import roles_hint

__all__ = ["mandate_app", "token_app"]

mandate_app = typer.Typer(help="Issue ACT mandates.", no_args_is_help=True)
token_app = typer.Typer(help="Decode and verify compact tokens.", no_args_is_help=True)


def _usage_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _invalid(exc: McpClientAuthError) -> typer.Exit:
    # Error messages in this SDK never contain the token; print code and message only.
    typer.echo(f"invalid: {exc.code}: {exc}", err=True)
    return typer.Exit(1)


def _read_token(token: str) -> str:
    text = sys.stdin.read() if token == "-" else token
    text = text.strip()
    if not text:
        raise _usage_error("no token given (pass it as an argument, or '-' and pipe it in)")
    return text


def _load_agent(path: Path) -> Identity | PublicKey:
    """The agent's key: a private key file, or just its public JWK (all a mandate needs)."""
    try:
        document = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return Identity.load(path)  # PEM, or a readable error
    if isinstance(document, dict) and "d" not in document and "keys" not in document:
        return PublicKey.from_jwk(document)
    return Identity.load(path)


@mandate_app.command("issue")
def issue(
    issuer_key: Path = typer.Option(..., "--issuer-key", help="The issuing user's private key."),
    agent_key: Path = typer.Option(..., "--agent-key", help="The agent's key (private or public JWK)."),
    aud: list[str] = typer.Option(..., "--aud", help="Audience (the MCP server); repeatable."),
    purpose: str = typer.Option(..., "--purpose", help="The task purpose."),
    cap: list[str] = typer.Option(..., "--cap", help="A granted action such as mcp.search; repeatable."),
    ttl: int = typer.Option(DEFAULT_MANDATE_TTL, "--ttl", min=1, help="Lifetime in seconds."),
    jwks: Path | None = typer.Option(
        None, "--jwks", help="Trust file: refuse unless the issuer key is registered for the iss."
    ),
    iss: str | None = typer.Option(None, "--iss", help="The principal (default: the issuer key's name)."),
) -> None:
    """Sign an ACT mandate and print it (compact JWS) on standard output."""
    try:
        issuer = Identity.load(issuer_key)
        agent = _load_agent(agent_key)
        agent_public = agent.public if isinstance(agent, Identity) else agent
        if agent_public.thumbprint == issuer.public.thumbprint:
            raise _usage_error("the issuer key is the agent key: an agent never signs its own mandate")
        if jwks is not None:
            trust = _load_trust(jwks)
            principal = iss if iss is not None else issuer.name
            if trust.is_agent(issuer.kid):
                raise _usage_error("the issuer key is an agent key in the trust file; agents cannot issue")
            if not trust.may_issue(issuer.kid, principal):
                raise _usage_error(f"the trust file does not let the issuer key sign for iss {principal!r}")
        mandate = Mandate.issue(
            issuer, agent=agent, audience=aud, purpose=purpose, capabilities=cap, ttl=ttl, iss=iss
        )
    except McpClientAuthError as exc:
        raise _usage_error(f"{exc.code}: {exc}") from None
    typer.echo(mandate.token)


def _load_trust(path: Path, *, roles: bool = True) -> TrustStore:
    try:
        trust = TrustStore.from_jwks(path)
    except KeyFormatError as exc:
        raise _usage_error(f"{exc.code}: {exc}") from None
    if roles and not trust.has_roles:
        raise _usage_error(roles_hint(path))
    return trust


@token_app.command("decode")
def decode(token: str = typer.Argument(..., help="The compact token, or '-' for standard input.")) -> None:
    """Print a token's header and claims as JSON, WITHOUT verifying its signature."""
    text = _read_token(token)
    try:
        jws = jose.decode(text)
    except McpClientAuthError as exc:
        raise _invalid(exc) from None
    typer.echo("warning: the signature was NOT verified; use 'token verify'", err=True)
    typer.echo(json.dumps({"verified": False, "header": jws.header, "claims": jws.claims}, indent=2))


# typ -> verifier: (token, trust, audience, mandate token) -> (kind, verified object with .header/.claims)
_Verifier = Callable[[str, TrustStore, str | None, str | None], tuple[str, Any]]


def _verify_act(token: str, trust: TrustStore, audience: str | None, mandate: str | None) -> tuple[str, Any]:
    claims = jose.decode(token).claims
    if "exec_act" in claims or "status" in claims:
        # The agent key alone signs a record: its iss/cap are only claims until they are compared
        # with the mandate, verified against the issuer roles first.
        if mandate is None:
            raise RecordMandateMissing(
                "an execution record proves its mandate claims only against the mandate: pass --mandate"
            )
        verified_mandate = Mandate.verify(mandate, trust)
        record = ExecutionRecord.verify(token, trust, mandate=verified_mandate)
        check_audience(record.aud, audience)
        return "execution_record", record
    return "mandate", Mandate.verify(token, trust, audience=audience)


def _verify_ect(token: str, trust: TrustStore, audience: str | None, mandate: str | None) -> tuple[str, Any]:
    ect = ExecutionContextToken.verify(token, trust, audience=audience)
    # With roles, only an agent key signs ECTs (an issuer key signing calls would skip the agent).
    if trust.has_roles and not trust.is_agent(str(ect.header.get("kid"))):
        raise KeyBindingMismatch("the ECT is not signed by a registered agent key", code="signer_not_agent")
    return "ect", ect


_VERIFIERS: dict[str, _Verifier] = {
    jose.ACT_TYP: _verify_act,
    jose.ECT_TYP: _verify_ect,
    jose.ECT_TYP_LEGACY: _verify_ect,
}


@token_app.command("verify")
def verify(
    token: str = typer.Argument(..., help="The compact token, or '-' for standard input."),
    jwks: Path = typer.Option(..., "--jwks", help="JWKS file with the trusted public keys."),
    aud: str | None = typer.Option(None, "--aud", help="Require this audience."),
    mandate: str | None = typer.Option(
        None, "--mandate", help="The record's mandate token (required for an execution record)."
    ),
) -> None:
    """Verify a mandate, execution record (with --mandate) or ECT. Exit 0 valid, 1 invalid, 2 usage error."""
    text = _read_token(token)
    trust = _load_trust(jwks, roles=False)
    try:
        typ = jose.decode(text).typ
        verifier = _VERIFIERS.get(typ) if isinstance(typ, str) else None
        if verifier is None:
            raise InvalidTokenType(f"not a token kind this command verifies; expected {sorted(_VERIFIERS)}")
        if typ == jose.ACT_TYP and not trust.has_roles:
            raise _usage_error(roles_hint(jwks))  # mandates and records: who signed matters
        kind, verified = verifier(text, trust, aud, mandate.strip() if mandate else None)
    except McpClientAuthError as exc:
        raise _invalid(exc) from None
    typer.echo(
        json.dumps(
            {"valid": True, "kind": kind, "header": verified.header, "claims": verified.claims}, indent=2
        )
    )
