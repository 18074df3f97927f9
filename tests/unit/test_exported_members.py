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


def _package_modules() -> list[str]:
    import pkgutil

    import mcpclient_auth

    return ["mcpclient_auth"] + [
        info.name for info in pkgutil.walk_packages(mcpclient_auth.__path__, "mcpclient_auth.")
    ]


@pytest.mark.parametrize("name", _package_modules())
def test_every_module_declares_its_surface_and_every_entry_exists(name: str) -> None:
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__"
    assert len(module.__all__) == len(set(module.__all__)), "duplicate names in __all__"
    missing = [member for member in module.__all__ if not hasattr(module, member)]
    assert missing == []


#: The modules below the facades (review P6): what a caller outside the package needs, nothing more.
#: The request hooks' helpers stay importable by path for the package itself but are not offered.
MINIMAL_SURFACES = {
    "mcpclient_auth.jsonrpc": ["Call", "NotJsonRpc", "parse"],
    "mcpclient_auth.refusal": [
        "REFUSAL_CODE",
        "error_from_jsonrpc",
        "is_refusal",
        "refusal_from_error",
        "refusal_text",
    ],
    "mcpclient_auth.endpoints": ["Endpoint", "EndpointSet", "canonical_url"],
    "mcpclient_auth.replay": ["MemoryReplayStore", "ReplayCache", "ReplayClaim", "ReplayStore"],
    "mcpclient_auth.replay_redis": ["DEFAULT_CLOCK_MARGIN", "DEFAULT_PREFIX", "RedisReplayStore"],
    "mcpclient_auth.dag": ["MAX_PREDS", "Frontier", "check_dag"],
}


@pytest.mark.parametrize("name", sorted(MINIMAL_SURFACES))
def test_non_facade_modules_export_a_minimal_surface(name: str) -> None:
    assert sorted(importlib.import_module(name).__all__) == sorted(MINIMAL_SURFACES[name])


def test_the_rfc9421_package_is_private_and_split_by_rfc_section() -> None:
    from mcpclient_auth import _rfc9421
    from mcpclient_auth._rfc9421 import algorithms, components, signatures

    parts = set(algorithms.__all__) | set(components.__all__) | set(signatures.__all__)
    assert set(_rfc9421.__all__) == parts
    assert not set(algorithms.__all__) & set(components.__all__) | set(signatures.__all__) & set(
        components.__all__
    )
