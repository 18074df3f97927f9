"""Name the action of a JSON-RPC call and decide whether the mandate allows it (pure: no I/O).

The default :class:`McpActionPolicy` is the mapping of the wire profile (DESIGN §3, revised
2026-12-01): **every call needs a capability except protocol plumbing**.

    >>> policy = McpActionPolicy()
    >>> policy.action_for(Call("request", "tools/call", 1, "search"))
    'mcp.search'
    >>> policy.action_for(Call("request", "prompts/get", 2, None, {"name": "summary"}))
    'mcp.prompt.summary'
    >>> policy.action_for(Call("request", "resources/read", 3, None, {"uri": "hr://handbook"}))
    'mcp.rpc.resources.read'
    >>> policy.requires_capability(Call("request", "tools/list", 4), "mcp.rpc.tools.list")
    False

Plumbing (:data:`PLUMBING_METHODS`) is what sets up and runs a session and what the server filters
down to the mandate anyway: ``initialize`` / ``server/discover``, ``ping``, the client's
notifications about the session (``notifications/initialized``, ``…/cancelled``, ``…/progress``,
``…/roots/list_changed``), ``resources/unsubscribe``, and the four list calls (``tools/list``,
``prompts/list``, ``resources/list``, ``resources/templates/list``), whose answers the reference
middleware filters to what the caller's mandate grants (and
:func:`~.adapters.langchain_mcp_adapters.narrow_tools` filters again on the client). A client's
answer to a server request is plumbing only when it is an error or an empty result (a ``ping``
answer). Everything else — ``tools/call``, ``prompts/get``,
``resources/read``, ``resources/subscribe``, ``completion/complete``, ``logging/setLevel``,
``tasks/*``, sampling / elicitation / roots answers, and any method this table does not know — needs
a capability the mandate grants.

``McpActionPolicy(permissive=True)`` (also :data:`PERMISSIVE`) is the first design's behaviour, kept
as an explicit opt-in: only ``tools/call`` needs a capability. ``strict=True`` goes the other way:
even plumbing needs one. :func:`check_call` raises :class:`~mcpclient_auth.errors.MandateDenied` (or
its subclass :class:`~mcpclient_auth.errors.ActionMappingError` for a name that cannot be an
action) — it never rewrites a name into something legal, because a rewritten name could collide with
a granted one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from .errors import ActionMappingError, ConfigurationError, MandateDenied
from .jsonrpc import Call, answered_by

__all__ = [
    "ACTION_COMPONENT",
    "PERMISSIVE",
    "PLUMBING_ACTIONS",
    "PLUMBING_METHODS",
    "RESERVED_NAMESPACES",
    "ActionPolicy",
    "CapabilitySet",
    "McpActionPolicy",
    "call_arguments",
    "check_call",
    "is_action",
]

ACTION_COMPONENT = r"[A-Za-z][A-Za-z0-9_-]*"
_ACTION = re.compile(rf"{ACTION_COMPONENT}(?:\.{ACTION_COMPONENT})*")

#: First components a tool name may not use, because ``mcp.<tool>`` would land in the namespace of
#: the session-level actions (``mcp.rpc.*``) or of the prompts (``mcp.prompt.<name>``).
RESERVED_NAMESPACES = frozenset({"rpc", "prompt"})

#: JSON-RPC methods a client may send without a capability (see the module docstring for why).
PLUMBING_METHODS = frozenset(
    {
        "initialize",
        "server/discover",
        "ping",
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
        "resources/unsubscribe",
    }
)
#: ``subscriptions/listen`` (protocol 2026-07-28) is plumbing only while it asks for nothing but
#: list-changed notifications; one that also subscribes to resources (or anything else) is action
#: ``mcp.rpc.subscriptions.listen.resources`` and needs a capability.
_LISTEN = "subscriptions/listen"
_LISTEN_PLUMBING_KEYS = frozenset({"toolsListChanged", "promptsListChanged", "resourcesListChanged"})

PROMPTS_GET = "prompts/get"
#: Response shapes (``Call.answers``) that carry nothing the server asked the agent's side for.
_PLUMBING_ANSWERS = frozenset({"error", "ping"})

# Longest action name accepted; far above any real tool name, it bounds work on hostile input.
_MAX_ACTION_LENGTH = 256


def is_action(name: str) -> bool:
    """Whether ``name`` is a legal action: dot-separated ``[A-Za-z][A-Za-z0-9_-]*`` components."""
    return len(name) <= _MAX_ACTION_LENGTH and _ACTION.fullmatch(name) is not None


#: The one spelling of the session-level action prefix (``McpActionPolicy.SESSION_PREFIX``).
_SESSION_PREFIX = "mcp.rpc."
_RESPONSE_ACTION = _SESSION_PREFIX + "response"


def _session_action(method: str) -> str:
    return _SESSION_PREFIX + method.replace("/", ".")


#: The actions of :data:`PLUMBING_METHODS` (and of plumbing answers): what the ledger verifier, which
#: sees actions but no bodies, accepts without a capability. The mapping is one-to-one on these: a
#: method with a ``.`` and the method ``response`` are refused, so no other method can reach them.
PLUMBING_ACTIONS = frozenset(
    {_session_action(m) for m in PLUMBING_METHODS} | {_RESPONSE_ACTION, _session_action(_LISTEN)}
)


def call_arguments(call: Call) -> Mapping[str, Any] | None:
    """What argument constraints (:mod:`.constraints`) look at for ``call``.

    ``tools/call`` and ``prompts/get``: ``params.arguments`` (``{}`` when absent);
    ``resources/read`` / ``resources/subscribe``: ``{"uri": params.uri}``; anything else ``None``.
    """
    params = call.params or {}
    if call.method in ("tools/call", PROMPTS_GET):
        arguments = params.get("arguments")
        return arguments if isinstance(arguments, Mapping) else {}
    if call.method in ("resources/read", "resources/subscribe"):
        uri = params.get("uri")
        return {"uri": uri} if uri is not None else {}
    return None


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
      component is not reserved (``rpc``, ``prompt``), else :class:`ActionMappingError`.
    - ``prompts/get`` with prompt ``P`` -> ``mcp.prompt.P`` (``P`` a legal action name).
    - any other method ``a/b`` -> ``mcp.rpc.a.b`` (``resources/read`` -> ``mcp.rpc.resources.read``;
      which URIs is an argument constraint on ``uri``, see :mod:`.constraints`). A method containing
      ``.``, or named ``response``, is refused: it would alias another method's action.
    - a client's JSON-RPC *response* -> ``mcp.rpc.response`` for an error or empty result, else
      ``mcp.rpc.<what it answers>`` (``mcp.rpc.sampling.createMessage``,
      ``mcp.rpc.elicitation.create``, ``mcp.rpc.roots.list``) or ``mcp.rpc.response.result``.
    - which of these need a capability: everything but plumbing (default); only tool calls
      (``permissive=True``); everything (``strict=True``).

        policy = McpActionPolicy()                   # the default: plumbing free, the rest granted
        policy = McpActionPolicy(permissive=True)    # opt-in: only tools/call is checked
    """

    TOOL_PREFIX = "mcp."
    PROMPT_PREFIX = "mcp.prompt."
    SESSION_PREFIX = _SESSION_PREFIX
    RESPONSE_ACTION = _RESPONSE_ACTION

    def __init__(self, strict: bool = False, *, permissive: bool = False) -> None:
        if strict and permissive:
            raise ConfigurationError("a policy cannot be both strict and permissive")
        self.strict = strict
        self.permissive = permissive

    def __repr__(self) -> str:
        if self.permissive:
            return "McpActionPolicy(permissive=True)"
        return f"McpActionPolicy(strict={self.strict})"

    def action_for(self, call: Call) -> str:
        if call.is_tool_call:
            return self._named_action(self.TOOL_PREFIX, call.tool, "tool", reserved=True)
        if call.method is None:
            return self._response_action(call.answers)
        if call.method == PROMPTS_GET:
            name = (call.params or {}).get("name")
            return self._named_action(self.PROMPT_PREFIX, name if isinstance(name, str) else None, "prompt")
        if "." in call.method or call.method == "response":
            raise ActionMappingError(
                f"JSON-RPC method {_safe_preview(call.method)!r} would alias another method's action; "
                "refused",
                method=_safe_preview(call.method),
            )
        action = _session_action(call.method)
        if call.method == _LISTEN and not is_plumbing(call):
            # A listen stream that also subscribes to resources (or to anything else) is not plumbing:
            # its own action, so the ledger verifier, which sees actions only, can tell them apart.
            action += ".resources"
        if not is_action(action):
            raise ActionMappingError(
                f"JSON-RPC method {_safe_preview(call.method)!r} cannot be mapped to an action name",
                method=_safe_preview(call.method),
            )
        return action

    def requires_capability(self, call: Call, action: str) -> bool:
        if self.strict:
            return True
        if self.permissive:
            return call.is_tool_call
        return not is_plumbing(call)

    def _response_action(self, answers: str | None) -> str:
        if answers in _PLUMBING_ANSWERS:
            return self.RESPONSE_ACTION
        if answers in ("sampling/createMessage", "elicitation/create", "roots/list"):
            return _session_action(answers)
        return self.RESPONSE_ACTION + ".result"

    def _named_action(self, prefix: str, name: str | None, what: str, *, reserved: bool = False) -> str:
        if name is None:
            raise ActionMappingError(f"{what} call without a {what} name")
        if not is_action(name):
            raise ActionMappingError(
                f"{what} name {_safe_preview(name)!r} is not a legal action name "
                "(dot-separated [A-Za-z][A-Za-z0-9_-]* components); refused, not rewritten",
                **{what: _safe_preview(name)},
            )
        if reserved and _reserved(name):
            raise ActionMappingError(
                f"{what} name {_safe_preview(name)!r} uses a reserved namespace; refused, not rewritten",
                **{what: _safe_preview(name)},
            )
        return prefix + name


def _reserved(tool: str) -> bool:
    first, dot, _ = tool.partition(".")
    # ``rpc`` alone is refused too (the session namespace's root); a tool named plain ``prompt`` is
    # fine: ``mcp.prompt`` is no prompt's action (those always have a name after the dot).
    return first == "rpc" or (first in RESERVED_NAMESPACES and bool(dot))


def is_plumbing(call: Call) -> bool:
    """Whether the default policy lets ``call`` through without a capability (module docstring)."""
    if call.kind == "response":
        return call.answers in _PLUMBING_ANSWERS
    if call.method in PLUMBING_METHODS:
        return True
    if call.method == _LISTEN:
        notifications = (call.params or {}).get("notifications")
        return isinstance(notifications, Mapping) and set(notifications) <= _LISTEN_PLUMBING_KEYS
    return False


#: The first design's behaviour as an explicit opt-in: only ``tools/call`` needs a capability.
PERMISSIVE = McpActionPolicy(permissive=True)


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
    for answer_action in ungranted_input_responses(policy, call, mandate):
        raise MandateDenied(
            f"the request carries an answer ({answer_action!r}) the mandate does not grant; the call was "
            "not sent",
            action=answer_action,
        )
    return action


#: Where MCP 2026-07-28 carries a client's answers to a server's sampling / elicitation / roots
#: requests: inside the retried request, not as JSON-RPC responses.
INPUT_RESPONSES = "inputResponses"


def input_response_calls(call: Call) -> list[Call]:
    """Each answer embedded in ``call``'s ``params.inputResponses``, as the response :class:`Call` it
    replaces (classified by shape, like a JSON-RPC response: ``elicitation/create``, ...)."""
    if call.kind != "request" or not call.params:
        return []
    responses = call.params.get(INPUT_RESPONSES)
    if responses is None:
        return []
    if not isinstance(responses, Mapping):
        # Fail closed: an answer we cannot classify is classified as an answer with a result.
        return [Call("response", None, call.id, None, None, "result")]
    answers = [answered_by(value) for value in responses.values()]
    return [Call("response", None, call.id, None, None, answered) for answered in answers]


def ungranted_input_responses(policy: ActionPolicy, call: Call, mandate: CapabilitySet | None) -> list[str]:
    """The actions of ``call``'s embedded answers that need a capability ``mandate`` does not grant —
    the same actions their JSON-RPC response form needs, so a protocol version cannot bypass them."""
    refused = []
    for answer in input_response_calls(call):
        action = policy.action_for(answer)
        if policy.requires_capability(answer, action) and (mandate is None or not mandate.allows(action)):
            refused.append(action)
    return refused
