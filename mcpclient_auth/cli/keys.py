"""``mcpclient-auth keys ...``: create and inspect signing keys.

    mcpclient-auth keys init --dir keys/ [--alg ES256|EdDSA] [--force]
        keys/user.jwk, keys/agent.jwk (private, 0600) and keys/jwks.json (public keys + roles)
    mcpclient-auth keys trust keys/jwks.json --issuer maria.jwk [--principal maria] --agent agent.jwk
        add keys and their roles to a trust file (created if missing); prints the roles
    mcpclient-auth keys show keys/agent.jwk
        public information only (kid, alg, name, public JWK), as JSON

The trust file is a JWKS with one extra top-level member, ``"mcpclient_auth"``, that says which key
may sign mandates for which ``iss`` (issuers) and which keys are agent keys (docs/SECURITY.md).

Exit codes: 0 ok, 2 usage (existing keys without ``--force``, unreadable key file, role conflict).
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from cryptography.hazmat.primitives import serialization

from ..errors import KeyFormatError, McpClientAuthError
from ..keys import ROLES_MEMBER, Identity, PublicKey, TrustStore

__all__ = ["app"]

app = typer.Typer(help="Create and inspect signing keys.", no_args_is_help=True)


class Algorithm(StrEnum):
    ES256 = "ES256"
    EdDSA = "EdDSA"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command("init")
def init(
    directory: Path = typer.Option(..., "--dir", help="Directory for user.jwk, agent.jwk and jwks.json."),
    alg: Algorithm = typer.Option(Algorithm.ES256, "--alg", help="Key algorithm."),
    user_name: str = typer.Option("user", "--user-name", help="Name of the user key (mandate 'iss')."),
    agent_name: str = typer.Option("agent", "--agent-name", help="Name of the agent key (mandate 'sub')."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing keys."),
) -> None:
    """Create a user key and an agent key (private JWKs, mode 0600) and the trust file jwks.json:
    their public keys, the user key registered as issuer for --user-name, the agent key as agent."""
    targets = {"user": directory / "user.jwk", "agent": directory / "agent.jwk"}
    existing = [path.name for path in targets.values() if path.exists()]
    if existing and not force:
        raise _fail(
            f"{', '.join(existing)} already exist in {os.fspath(directory)!r}; use --force to replace"
        )
    if not user_name or not agent_name or user_name == agent_name:
        raise _fail("--user-name and --agent-name must be two different non-empty names")
    # The directory holds private keys: keep it private when we create it.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    user = Identity.generate(alg.value, name=user_name)
    agent = Identity.generate(alg.value, name=agent_name)
    user.save(targets["user"])
    agent.save(targets["agent"])
    trust = TrustStore()
    trust.add_issuer(user)
    trust.add_agent(agent)
    jwks = trust.save(directory / "jwks.json")
    for role, identity in (("user", user), ("agent", agent)):
        typer.echo(f"{role:5s} {identity.alg:5s} kid={identity.kid} name={identity.name}  {targets[role]}")
    typer.echo(f"public JWKS: {jwks}")
    typer.echo(f"trust: user key issues mandates for {user_name!r}; agent key is an agent key")


def _describe(public: PublicKey, *, private: bool) -> dict[str, Any]:
    return {
        "kid": public.kid,
        "alg": public.alg,
        "name": public.name,
        "thumbprint": public.thumbprint,
        "private": private,
        "public_jwk": public.to_jwk(),
    }


def _read_key_file(path: Path) -> dict[str, Any] | list[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read {os.fspath(path)!r}: {exc.strerror}") from None
    if not data.lstrip().startswith(b"{"):
        if b"PUBLIC KEY" in data:
            try:
                loaded = serialization.load_pem_public_key(data)
            except ValueError:
                raise KeyFormatError("could not read the PEM public key") from None
            return _describe(PublicKey(loaded), private=False)  # type: ignore[arg-type]
        return _describe(Identity.from_pem(data).public, private=True)
    try:
        document = json.loads(data)
    except ValueError:
        raise KeyFormatError(f"{os.fspath(path)!r} is not valid JSON") from None
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        return [_describe(key, private=False) for key in TrustStore.from_jwks(document)]
    if isinstance(document, dict) and "d" in document:
        return _describe(Identity.from_jwk(document).public, private=True)
    return _describe(PublicKey.from_jwk(document), private=False)


def _public_key(value: str, trust: TrustStore) -> PublicKey:
    """A key given as a file (private or public JWK, PEM) or as the kid of a key already in ``trust``."""
    path = Path(value)
    if path.is_file():
        described = _read_key_file(path)
        if isinstance(described, list):
            raise KeyFormatError(f"{value!r} is a JWKS; give one key file (or a kid)")
        return PublicKey.from_jwk(described["public_jwk"])
    if value in trust:
        return trust.get(value)
    raise KeyFormatError(f"{value!r} is neither a key file nor the kid of a key in the trust file")


@app.command("trust")
def trust_command(
    jwks: Path = typer.Argument(..., help="The trust file (a JWKS); created when missing."),
    issuers: list[str] = typer.Option(
        [], "--issuer", help="A key (file or kid) that signs mandates; repeatable."
    ),
    principals: list[str] = typer.Option(
        [],
        "--principal",
        help="The iss the (single) --issuer may sign for; repeatable. Default: the key's name.",
    ),
    agents: list[str] = typer.Option([], "--agent", help="An agent key (file or kid); repeatable."),
    max_depth: int | None = typer.Option(None, "--max-depth", min=0, help="Most delegation hops allowed."),
) -> None:
    """Add keys and their roles to a trust file: who may sign mandates for whom, which keys are agents."""
    if not issuers and not agents and max_depth is None:
        raise _fail("nothing to do: give --issuer, --agent or --max-depth")
    if principals and len(issuers) != 1:
        raise _fail("--principal applies to exactly one --issuer; run the command once per issuer")
    try:
        trust = TrustStore.from_jwks(jwks) if jwks.exists() else TrustStore()
        for value in issuers:
            trust.add_issuer(_public_key(value, trust), principals=principals or None)
        for value in agents:
            trust.add_agent(_public_key(value, trust))
        if max_depth is not None:
            trust.max_delegation_depth = max_depth
    except McpClientAuthError as exc:
        raise _fail(f"{exc.code}: {exc}") from None
    trust.save(jwks)
    typer.echo(f"trust file: {os.fspath(jwks)} ({len(trust)} keys)")
    for kid, names in trust.issuers.items():
        typer.echo(f"issuer kid={kid} name={trust.get(kid).name} may sign for: {', '.join(sorted(names))}")
    for kid in sorted(trust.agents):
        typer.echo(f"agent  kid={kid} name={trust.get(kid).name}")
    typer.echo(f"delegation: at most {trust.max_delegation_depth} hops")


def roles_hint(path: Path) -> str:
    """The message for a key set without roles, for commands that verify mandates."""
    return (
        f"{os.fspath(path)!r} has no {ROLES_MEMBER!r} roles, so nothing says which key may sign "
        f"mandates for whom; add them with `mcpclient-auth keys trust {os.fspath(path)} --issuer "
        f"USER_KEY [--principal NAME] --agent AGENT_KEY` (a new `keys init` writes them)"
    )


@app.command("show")
def show(file: Path = typer.Argument(..., help="A private or public JWK, a JWKS, or a PEM key.")) -> None:
    """Print a key's public information (never the private part) as JSON."""
    try:
        described = _read_key_file(file)
    except KeyFormatError as exc:
        raise _fail(f"{exc.code}: {exc}") from None
    typer.echo(json.dumps(described, indent=2))
