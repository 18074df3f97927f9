"""The hook core is library-neutral: httpx and httpx2 each get thin classes from one registry.

Runs in stack A (httpx2 is installed there too, via langsmith) — the end-to-end httpx2 path is in
``tests/stack_b/test_hooks.py``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from mcpclient_auth import _hooks as hooks
from mcpclient_auth._hooks import (
    AsyncHashingStream,
    AsyncLocalAnswer,
    _httpx,
    error_code_for,
    library_for,
    library_named,
)
from mcpclient_auth.errors import ConfigurationError
from mcpclient_auth.factory import httpx2_client_factory, httpx_client_factory, install

httpx2 = pytest.importorskip("httpx2")


def test_library_for_dispatches_on_the_objects_library() -> None:
    assert library_for(httpx.AsyncClient()) is _httpx.LIBRARY
    assert library_for(httpx.Request("GET", "http://x")) is _httpx.LIBRARY
    second = library_for(httpx2.Client())
    assert second.name == "httpx2" and second is library_named("httpx2")
    assert issubclass(second.async_transport, httpx2.AsyncBaseTransport)  # type: ignore[arg-type]
    assert issubclass(second.async_stream, httpx2.AsyncByteStream)  # type: ignore[arg-type]
    assert not issubclass(second.async_stream, httpx.AsyncByteStream)  # type: ignore[arg-type]
    # One core: both libraries' classes are thin bindings of the same mixins.
    for library in (_httpx.LIBRARY, second):
        assert issubclass(library.async_transport, AsyncLocalAnswer)  # type: ignore[arg-type]
        assert issubclass(library.async_stream, AsyncHashingStream)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        library_for(object())


def test_the_per_library_classes_are_written_out_not_built_at_run_time() -> None:
    # Greppable classes mypy can see: each is defined in its library's module, with no type() call.
    import ast
    import inspect


    second = library_named("httpx2")
    for library, module in (
        (_httpx.LIBRARY, "mcpclient_auth._hooks._httpx"),
        (second, "mcpclient_auth._hooks._httpx2"),
    ):
        for cls in (
            library.async_transport,
            library.sync_transport,
            library.async_stream,
            library.sync_stream,
        ):
            assert cls.__module__ == module
    package = Path(inspect.getfile(hooks)).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "type":
                assert len(node.args) < 3, f"{path.name}:{node.lineno} builds a class at run time"


def test_factories_and_install_use_the_matching_library(tmp_path: Path) -> None:
    from mcpclient_auth.run import AgentRun
    from tests.support.hooks_env import actors

    user, agent, _ = actors()
    run = AgentRun(
        agent=agent,
        issuer=user,
        purpose="p",
        capabilities=["mcp.search"],
        endpoint="http://127.0.0.1:1/mcp",
        ledger=tmp_path / "l.jsonl",
    )
    one = httpx_client_factory(run)()
    two = httpx2_client_factory(run)()
    assert isinstance(one, httpx.AsyncClient) and isinstance(one._transport, _httpx.AsyncLocalAnswer)
    assert isinstance(two, httpx2.AsyncClient)
    assert isinstance(two._transport, library_named("httpx2").async_transport)
    assert two.timeout.read == 300.0
    hooks = install(httpx2.Client(), run)
    assert hooks.library.name == "httpx2"
    with pytest.raises(ConfigurationError):
        install(object(), run)
    run.close()


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ReadTimeout("t"), "timeout"),
        (httpx.ConnectError("c"), "transport_error"),
        (ValueError("v"), "stream_error"),
    ],
)
def test_error_codes_are_the_same_for_both_libraries(exc: BaseException, code: str) -> None:
    assert error_code_for(exc) == code
    twin = getattr(httpx2, type(exc).__name__, None)
    if twin is not None:
        assert error_code_for(twin("x")) == code


def test_stack_a_never_imports_httpx2() -> None:
    """Importing the package and building an httpx client must not need httpx2 (lazy import)."""
    script = (
        "import sys; sys.modules['httpx2'] = None\n"
        "import mcpclient_auth, mcpclient_auth.factory, mcpclient_auth._hooks\n"
        "from mcpclient_auth.factory import httpx_client_factory\n"
        "httpx_client_factory(None)()\n"
        "assert 'mcpclient_auth._hooks._httpx2' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
