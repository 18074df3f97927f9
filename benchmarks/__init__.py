"""mcpclient-auth benchmark suite (issue 8): every figure a ratio against a baseline of the same run.

    python -m benchmarks              # full run (several minutes), writes benchmarks/results.json
    python -m benchmarks --quick      # fast sanity pass (well-formed results, not meaningful figures)
    python -m benchmarks --only 1 4   # selected targets

Targets (see docs/performance.md): 1 request-hook cost (:mod:`.hook_targets`), 2 loopback throughput
through a real mcp ``ClientSession`` (:mod:`.e2e_targets`), 3 token cache (:mod:`.token_targets`),
4 ledger append / verify (:mod:`.ledger_targets`), 5 memory (:mod:`.memory_targets`), 6 cost growth
(:mod:`.hook_targets`, :mod:`.ledger_targets`). The older single-purpose scripts (``token_sign``,
``httpsig_sign``, ``request_hook``, ``ledger_bench``, ``authz_cache_hit``) stay runnable on their own.
"""
