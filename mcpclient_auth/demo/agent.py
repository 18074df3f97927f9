"""A LangGraph agent over ``MultiServerMCPClient`` whose every MCP call goes through an :class:`AgentRun`,
on one MCP session held for the question (:func:`~mcpclient_auth.adapters.langchain_mcp_adapters.run_tools`).

    answer = await ask(run, "What is Bob's salary?", script=[tool_call("get_employee_salary", ...),
                                                             AIMessage(content="...")])

The chat model is scripted by default (offline, deterministic). Set ``MCPCLIENT_AUTH_MODEL`` to a
LangChain model spec such as ``openai:gpt-4o-mini`` (plus that provider's package and API key, e.g.
``OPENAI_API_KEY``) to let a real model choose the tools instead; the script is then ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_mcp_adapters.client import MultiServerMCPClient

from ..adapters.langchain_mcp_adapters import RefusalInterceptor, SessionMode, connection, run_tools
from ..run import AgentRun

__all__ = ["MODEL_ENV", "AgentAnswer", "ScriptedModel", "ask", "chat_model", "tool_call"]

#: Environment variable naming a real chat model (``provider:model``); unset = the scripted model.
MODEL_ENV = "MCPCLIENT_AUTH_MODEL"


class ScriptedModel(GenericFakeChatModel):
    """Plays back fixed messages; tool binding is a no-op because the script already names the tools."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def tool_call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    """A scripted model turn that calls one tool."""
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


def chat_model(script: Sequence[AIMessage]) -> BaseChatModel:
    """The real model named by ``$MCPCLIENT_AUTH_MODEL`` if set, else a :class:`ScriptedModel`."""
    spec = os.environ.get(MODEL_ENV, "").strip()
    if spec:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec)
    return ScriptedModel(messages=iter(list(script)))


@dataclass(frozen=True)
class AgentAnswer:
    """What one agent invocation produced."""

    answer: str
    #: Tool names the model was offered.
    offered: list[str]
    #: (tool name, text) of every tool result the model read, refusals included.
    tool_results: list[tuple[str, str]]


async def ask(
    run: AgentRun,
    question: str,
    *,
    script: Sequence[AIMessage],
    narrow: bool = False,
    server: str = "hr",
    sessions: SessionMode = "held",
) -> AgentAnswer:
    """Ask the agent ``question`` with the run's MCP server(s) as tools.

    ``narrow=True`` offers the model only the tools the mandate grants. The default offers every tool
    the server lists: a server behind ``McpAuthMiddleware`` already lists only what the caller's
    mandate grants; against one that lists everything, a call outside the mandate is refused
    *locally* (a ``denial`` in the ledger).
    ``sessions``: one MCP session held for the whole question (default), or ``"per-call"``.
    """
    client = MultiServerMCPClient(
        {server: connection(run)},  # type: ignore[dict-item]
        tool_interceptors=[RefusalInterceptor()],  # a refusal becomes a tool error the model can read
    )
    async with run_tools(run, client, sessions=sessions, narrow=narrow) as tools:
        agent = create_agent(chat_model(script), tools)
        result = await agent.ainvoke({"messages": [{"role": "user", "content": question}]})
    messages = result["messages"]
    results = [(str(m.name), _text(m.content)) for m in messages if isinstance(m, ToolMessage)]
    return AgentAnswer(_text(messages[-1].content), [t.name for t in tools], results)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") if isinstance(p, dict) else str(p) for p in content]
        return "".join(parts)
    return str(content)
