"""Name the action of a JSON-RPC call and decide whether the mandate allows it (pure: no I/O).

The default :class:`McpActionPolicy` is the mapping of the wire profile (DESIGN §3):

    >>> policy = McpActionPolicy()
    >>> policy.action_for(Call("request", "tools/call", 1, "search"))
    'mcp.search'
    >>> policy.action_for(Call("request", "tools/list", 2))
    'mcp.rpc.tools.list'

``tools/call`` always needs a capability; session-level methods need one only when the policy is
``strict``. :func:`check_call` puts both together and raises
:class:`~mcpclient_auth.errors.MandateDenied` (or its subclass
:class:`~mcpclient_auth.errors.ActionMappingError` for a name that cannot be an action) — it never
rewrites a name into something legal, because a rewritten name could collide with a granted one.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from .errors import ActionMappingError, MandateDenied
from .jsonrpc import Call

__all__ = [
    "ACTION_COMPONENT",
    "RESERVED_NAMESPACES",
    "ActionPolicy",
    "CapabilitySet",
    "McpActionPolicy",
    "check_call",
    "is_action",
]

ACTION_COMPONENT = r"[A-Za-z][A-Za-z0-9_-]*"
_ACTION = re.compile(rf"{ACTION_COMPONENT}(?:\.{ACTION_COMPONENT})*")

#: First components a tool name may not use, because ``mcp.<tool>`` would land in the namespace of
#: the session-level actions (``mcp.rpc.*``) that non-strict policies allow without a capability.
RESERVED_NAMESPACES = frozenset({"rpc"})

# Longest action name accepted; far above any real tool name, it bounds work on hostile input.
_MAX_ACTION_LENGTH = 256


def is_action(name: str) -> bool:
    """Whether ``name`` is a legal action: dot-separated ``[A-Za-z][A-Za-z0-9_-]*`` components."""
    return len(name) <= _MAX_ACTION_LENGTH and _ACTION.fullmatch(name) is not None


@runtime_checkable
class CapabilitySet(Protocol):
    """What :func:`check_call` needs from a mandate (``act.Mandate`` satisfies it)."""

    def allows(self, action: str) -> bool: ...


@runtime_checkable
class ActionPolicy(Protocol):
    """Maps a call to its ``exec_act`` and says whether that action needs a mandate capability."""

    def action_for(self, call: Call) -> str:
        """The action name; raises :class:`~mcpclient_auth.errors.ActionMappingError`."""
        ...

    def requires_capability(self, call: Call, action: str) -> bool: ...


def _safe_preview(name: str, limit: int = 64) -> str:
    # Tool names come from the model or the server: show a bounded, printable preview only.
    preview = "".join(ch if ch.isprintable() else "?" for ch in name[:limit])
    return preview + ("…" if len(name) > limit else "")


class McpActionPolicy:
    """The profile's default mapping.

    - ``tools/call`` with tool ``X`` -> ``mcp.X``; ``X`` must itself be a legal action name whose first
      component is not reserved (``rpc``), else :class:`ActionMappingError`.
    - any other method ``a/b`` -> ``mcp.rpc.a.b``; a client's JSON-RPC *response* to a server request
      -> ``mcp.rpc.response``.
    - session-level actions need a capability only when ``strict=True``.

        policy = McpActionPolicy(strict=True)   # mandate must also grant mcp.rpc.initialize, ...
    """

    TOOL_PREFIX = "mcp."
    SESSION_PREFIX = "mcp.rpc."
    RESPONSE_ACTION = "mcp.rpc.response"

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def __repr__(self) -> str:
        return f"McpActionPolicy(strict={self.strict})"

    def action_for(self, call: Call) -> str:
        if call.is_tool_call:
            return self._tool_action(call.tool)
        if call.method is None:
            return self.RESPONSE_ACTION
        action = self.SESSION_PREFIX + call.method.replace("/", ".")
        if not is_action(action):
            raise ActionMappingError(
                f"JSON-RPC method {_safe_preview(call.method)!r} cannot be mapped to an action name",
                method=_safe_preview(call.method),
            )
        return action

    def requires_capability(self, call: Call, action: str) -> bool:
        return call.is_tool_call or self.strict

    def _tool_action(self, tool: str | None) -> str:
        if tool is None:
            raise ActionMappingError("tools/call without a tool name")
        if not is_action(tool):
            raise ActionMappingError(
                f"tool name {_safe_preview(tool)!r} is not a legal action name "
                "(dot-separated [A-Za-z][A-Za-z0-9_-]* components); refused, not rewritten",
                tool=_safe_preview(tool),
            )
        if tool.split(".", 1)[0] in RESERVED_NAMESPACES:
            raise ActionMappingError(
                f"tool name {_safe_preview(tool)!r} uses a reserved namespace; refused, not rewritten",
                tool=_safe_preview(tool),
            )
        return self.TOOL_PREFIX + tool


def check_call(policy: ActionPolicy, call: Call, mandate: CapabilitySet) -> str:
    """The action for ``call`` if ``mandate`` allows it; else raise.

        action = check_call(McpActionPolicy(), call, mandate)   # 'mcp.search'

    Raises :class:`ActionMappingError` when no action can be named, :class:`MandateDenied` when the
    action needs a capability the mandate does not grant.
    """
    action = policy.action_for(call)
    if policy.requires_capability(call, action) and not mandate.allows(action):
        details: dict[str, str] = {}
        if call.method is not None:
            details["method"] = call.method
        if call.tool is not None:
            details["tool"] = call.tool
        raise MandateDenied(
            f"the mandate does not grant {action!r}; the call was not sent",
            action=action,
            **details,
        )
    return action
