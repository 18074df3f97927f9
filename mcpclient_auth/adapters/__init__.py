"""Adapters for MCP client stacks, one module per adapted package:

- :mod:`.mcp_v1` — a plain mcp 1.x ``ClientSession`` (stack A);
- :mod:`.mcp_v2` — an mcp 2.x ``Client`` on the 2026-07-28 transport (stack B);
- :mod:`.langchain_mcp_adapters` — LangChain / LangGraph via ``langchain-mcp-adapters`` (stack A);
- :mod:`.langchain_mcp` — LangChain's own ``langchain.mcp`` (stack B).

Each imports its stack lazily, so the core package works without them."""

from __future__ import annotations

__all__: list[str] = []  # nothing here: import the adapter of your stack by its path
