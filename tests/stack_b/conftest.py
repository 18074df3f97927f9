"""Stack-B tests run only in the stack-B environment (mcp 2.x, fastmcp 4, httpx2).

In the stack-A environment (mcp 1.x, fastmcp 3) this directory is not collected at all, so the
default ``python -m pytest`` run stays clean; ``.ci/run-stack-b`` runs it in its own virtualenv.
The check reads package metadata only: importing mcp 1.x here would be harmless, but importing
``support.py`` would not.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _major(distribution: str) -> int:
    try:
        return int(version(distribution).split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


STACK_B = _major("mcp") >= 2 and _major("fastmcp") >= 4 and _major("httpx2") >= 1

if not STACK_B:
    collect_ignore_glob = ["*.py"]
