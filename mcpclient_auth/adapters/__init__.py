"""Adapters for MCP client stacks: a plain mcp ``ClientSession`` (:mod:`.mcp_session`) and
LangChain / LangGraph via langchain-mcp-adapters (:mod:`.langgraph`). Each imports its stack lazily,
so the core package works without them."""
