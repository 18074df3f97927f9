"""Run by ``test_hooks.py`` under a *stack-A* interpreter (mcp 1.x, httpx 0.28): one signed run
against the stack-B server, through the stack-A adapter (``open_session``: mcp 1.x ``ClientSession``).

    python stack_a_client.py URL AUDIENCE AGENT_JWK USER_JWK LEDGER

Prints a JSON object: the run id, the tool result, and the typed error of a refused call.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mcpclient_auth.adapters.mcp_v1 import open_session
from mcpclient_auth.errors import MandateDenied
from mcpclient_auth.keys import Identity
from mcpclient_auth.run import AgentRun


async def main(url: str, audience: str, agent_path: str, user_path: str, ledger: str) -> dict[str, object]:
    run = AgentRun(
        agent=Identity.load(agent_path),
        issuer=Identity.load(user_path),
        purpose="Answer HR questions",
        capabilities=["mcp.search"],
        endpoint=url,
        ledger=ledger,
        audience=audience,
    )
    refused = None
    async with run, open_session(run) as session:
        result = await session.call_tool("search", {"query": "from stack A"})
        try:
            await session.call_tool("get_employee_salary", {"employee": "bob"})
        except MandateDenied as exc:
            refused = exc.code
    return {"run": run.id, "text": result.content[0].text, "refused": refused}  # type: ignore[union-attr]


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:6]))))
