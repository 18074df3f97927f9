"""A LangGraph agent over MultiServerMCPClient: tools narrowed to the mandate, every call signed.

    python samples/langgraph_agent.py [--out DIR]

The chat model is scripted (no API key needed): it asks for the office locations, then searches the
handbook, then answers. Swap in any LangChain chat model that supports tool calling.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hr_server import running_hr_server
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_mcp_adapters.client import MultiServerMCPClient

from mcpclient_auth.adapters.langgraph import RefusalInterceptor, connection, narrow_tools
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.run import AgentRun


class ScriptedModel(GenericFakeChatModel):
    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self


def _call(name: str, args: dict[str, Any], call_id: str) -> AIMessage:
    return AIMessage(
        content="", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}]
    )


async def main(out: Path) -> int:
    user = Identity.generate("ES256", name="alice")
    agent_key = Identity.generate("ES256", name="hr-agent")
    ledger = out / "ledger.jsonl"
    with running_hr_server() as url:
        run = AgentRun(
            agent=agent_key,
            issuer=user,
            purpose="Where are our offices, and what is the relocation policy?",
            capabilities=["mcp.get_office_locations", "mcp.search"],
            endpoint=url,
            ledger=ledger,
        )
        async with run:
            client = MultiServerMCPClient(
                {"hr": connection(run)},  # type: ignore[dict-item]
                tool_interceptors=[RefusalInterceptor()],  # a refusal becomes a tool error the model reads
            )
            tools = narrow_tools(await client.get_tools(), run)  # get_employee_salary is never offered
            print("tools offered to the model:", [t.name for t in tools])
            model = ScriptedModel(
                messages=iter(
                    [
                        _call("get_office_locations", {}, "call-1"),
                        _call("search", {"query": "relocation"}, "call-2"),
                        AIMessage(content="Offices: Berlin, Lisbon, Toronto; see the relocation pages."),
                    ]
                )
            )
            agent = create_agent(model, tools)
            result = await agent.ainvoke({"messages": [{"role": "user", "content": run.mandate.purpose}]})
            answer = result["messages"][-1].content
            print("answer:", answer)
            await run.close(output=answer)

    for entry in Ledger.open(ledger).entries():
        print(f"{entry.seq:3} {entry.kind:9} {entry.meta.get('tool') or entry.meta.get('method') or ''}")
    report = verify_ledger(ledger, TrustStore([user, agent_key]))
    print("ledger verified:", report.ok, "->", ledger)
    return 0 if report.ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="directory for ledger.jsonl (default: a temp dir)"
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mcpclient-auth-"))
    out.mkdir(parents=True, exist_ok=True)
    raise SystemExit(asyncio.run(main(out)))
