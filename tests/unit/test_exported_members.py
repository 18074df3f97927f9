"""The public surface is defined: each public package's ``__all__`` is exactly what it exposes
(httpx's ``tests/test_exported_members.py`` pattern). A name added to a package without deciding
whether it is public fails here, and so does an ``__all__`` entry that no longer exists."""

from __future__ import annotations

import importlib
import types

import pytest

#: Names a module binds without exporting them (``from __future__ import annotations``, typing).
NOT_MEMBERS = {"annotations", "TYPE_CHECKING"}


@pytest.mark.parametrize(
    "name", ["mcpclient_auth", "mcpclient_auth.authz", "mcpclient_auth.server", "mcpclient_auth.ledger"]
)
def test_all_public_members_are_exported(name: str) -> None:
    module = importlib.import_module(name)
    exposed = {
        member
        for member, value in vars(module).items()
        if (not member.startswith("_") or member == "__version__")
        and not isinstance(value, types.ModuleType)  # submodules are reached by their own path
        and member not in NOT_MEMBERS
    }
    assert len(module.__all__) == len(set(module.__all__)), "duplicate names in __all__"
    assert set(module.__all__) == exposed


def test_the_root_exports_the_context_helpers_once() -> None:
    import mcpclient_auth
    from mcpclient_auth import _context as context

    for name in ("use_run", "current_run", "acting_for"):
        assert name in mcpclient_auth.__all__
        assert getattr(mcpclient_auth, name) is getattr(context, name)


def test_httpsig_exports_the_signer_and_verifier_not_the_rfc9421_layer() -> None:
    # The generic RFC 9421 machinery lives in the private _rfc9421 package.
    from mcpclient_auth import httpsig

    assert sorted(httpsig.__all__) == [
        "MCP_TAG",
        "PROFILES",
        "RequestSigner",
        "RequestVerifier",
        "SignatureProfile",
        "SignatureResult",
        "VerifiedSignature",
        "WIMSE_TAG",
    ]
    for name in httpsig.__all__:
        assert hasattr(httpsig, name)
