"""``mcpclient-auth keys ...``: create and inspect signing keys.

    mcpclient-auth keys init --dir keys/ [--alg ES256|EdDSA] [--force]
        keys/user.jwk, keys/agent.jwk (private, 0600) and keys/jwks.json (public)
    mcpclient-auth keys show keys/agent.jwk
        public information only (kid, alg, name, public JWK), as JSON

Exit codes: 0 ok, 2 usage (existing keys without ``--force``, unreadable key file).
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from cryptography.hazmat.primitives import serialization

from ..errors import KeyFormatError
from ..keys import Identity, PublicKey, TrustStore

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
    """Create a user key and an agent key (private JWKs, mode 0600) and their public JWKS."""
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
    jwks = TrustStore([user, agent]).save(directory / "jwks.json")
    for role, identity in (("user", user), ("agent", agent)):
        typer.echo(f"{role:5s} {identity.alg:5s} kid={identity.kid} name={identity.name}  {targets[role]}")
    typer.echo(f"public JWKS: {jwks}")


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


@app.command("show")
def show(file: Path = typer.Argument(..., help="A private or public JWK, a JWKS, or a PEM key.")) -> None:
    """Print a key's public information (never the private part) as JSON."""
    try:
        described = _read_key_file(file)
    except KeyFormatError as exc:
        raise _fail(f"{exc.code}: {exc}") from None
    typer.echo(json.dumps(described, indent=2))
