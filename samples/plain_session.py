"""A plain mcp ClientSession whose every call is authorised, chained, signed and recorded.

    python samples/plain_session.py [--out DIR]

Generates a user and an agent key, starts the sample HR server (which verifies every request)
locally, runs one agent run with a mandate for ``get_office_locations`` and ``search``, shows that
``get_employee_salary`` is refused before anything is sent, closes the run (phase-2 record + seal)
and verifies the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from hr_server import running_hr_server
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from mcpclient_auth.keys import Identity, TrustStore
from mcpclient_auth.ledger import Ledger, verify_ledger
from mcpclient_auth.principal import Principal
from mcpclient_auth.refusal import refusal_from_error
from mcpclient_auth.run import AgentRun


async def main(out: Path) -> int:
    user = Identity.generate("ES256", name="alice")
    agent = Identity.generate("ES256", name="hr-agent")
    ledger = out / "ledger.jsonl"
    trust = TrustStore()
    trust.add_issuer(user)  # alice's key signs mandates for "alice", and nothing else
    trust.add_agent(agent)  # the agent key signs calls, records and seals, never a mandate
    with running_hr_server(trust) as url:
        run = AgentRun(
            agent=agent,
            issuer=user,  # alice signs the mandate now
            purpose="Answer HR questions",
            capabilities=["mcp.get_office_locations", "mcp.search"],
            endpoint=url,
            ledger=ledger,
            principal=Principal(id="alice"),
        )
        async with (
            run,  # leaving the block writes the phase-2 record and seals the run
            run.httpx_client_factory()() as http,  # an httpx client that signs for this run
            streamable_http_client(url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            offices = await session.call_tool("get_office_locations", {})
            print("offices:", offices.content[0].text)  # type: ignore[union-attr]
            try:
                await session.call_tool("get_employee_salary", {"employee": "bob"})
            except McpError as exc:  # answered locally; the session carries on
                print("refused:", refusal_from_error(exc))
            found = await session.call_tool("search", {"query": "parental leave"})
            print("search:", found.content[0].text)  # type: ignore[union-attr]

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
