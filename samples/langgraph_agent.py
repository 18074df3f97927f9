"""A LangGraph agent over MultiServerMCPClient: tools narrowed to the mandate, every call signed.

    python samples/langgraph_agent.py [--out DIR]

The chat model is scripted (no API key needed): it asks for the office locations, then searches the
handbook, then answers. To let a real model choose instead, install its LangChain provider package
and set ``MCPCLIENT_AUTH_MODEL`` (e.g. ``MCPCLIENT_AUTH_MODEL=openai:gpt-4o-mini`` with
``OPENAI_API_KEY``); nothing else changes.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from hr_server import running_hr_server
from langchain_core.messages import AIMessage

from mcpclient_auth.demo.agent import ask, tool_call
from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.run import AgentRun

SCRIPT = [
    tool_call("get_office_locations", {}, "call-1"),
    tool_call("search", {"query": "relocation"}, "call-2"),
    AIMessage(content="Offices: Berlin, Lisbon, Toronto; see the relocation pages."),
]


async def main(out: Path) -> int:
    user = Identity.generate("ES256", name="alice")
    agent_key = Identity.generate("ES256", name="hr-agent")
    trust = TrustStore()
    trust.add_issuer(user)  # alice's key signs mandates for "alice", and nothing else
    trust.add_agent(agent_key)  # the agent key signs calls, records and seals, never a mandate
    ledger = out / "ledger.jsonl"
    with running_hr_server(trust) as url:
        run = AgentRun(
            agent=agent_key,
            issuer=user,
            purpose="Where are our offices, and what is the relocation policy?",
            capabilities=["mcp.get_office_locations", "mcp.search"],
            endpoint=url,
            ledger=ledger,
        )
        async with run:  # leaving the block writes the phase-2 record and seals the run
            # narrow=True: get_employee_salary is never offered to the model
            result = await ask(run, run.mandate.purpose, script=SCRIPT, narrow=True)
            print("tools offered to the model:", result.offered)
            print("answer:", result.answer)
            await run.aclose(output=result.answer)

    for entry in Ledger.open(ledger).entries():
        print(f"{entry.seq:3} {entry.kind:9} {entry.meta.get('tool') or entry.meta.get('method') or ''}")
    report = verify_ledger(ledger, trust)
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
