"""Server audit ledger costs (issue 13): what checkpoints and mandate dedupe add to the server's ledger.

- ``ServerAudit.append`` with a signed checkpoint every 1000 entries, vs ``Ledger.append`` of the same
  entries (same run, same file system): the checkpoint signatures and counting, amortised;
- filing a *new* run's mandate (a read under the lock of what other processes appended since, here
  100 lines each time), vs a plain append of the same mandate line;
- opening an existing server ledger (one pass over the file for mandate lines), vs reading the file's
  lines with the ledger reader.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from mcpclient_auth.act import Mandate
from mcpclient_auth.keys import Identity
from mcpclient_auth.ledger import Ledger, LedgerReader
from mcpclient_auth.server._audit import ServerAudit

from ._common import Config, Row

__all__ = ["ledger_audit"]

_META = {"method": "tools/call", "tool": "search", "id": 7, "url": "http://127.0.0.1:8000/mcp",
         "action": "mcp.search", "principal": "maria"}  # fmt: skip


def _appends(path: Path, count: int, audited: bool, key: Identity) -> float:
    path.unlink(missing_ok=True)
    if audited:
        audit = ServerAudit(Ledger(path, durability="none", key=key), key=key, checkpoint_every=1000)
        append = audit.append
    else:
        ledger = Ledger(path, durability="none")
        append = ledger.append
    start = time.perf_counter()
    for _ in range(count):
        append(run="run-1", kind="denial", meta=_META)
    elapsed = time.perf_counter() - start
    (audit.ledger if audited else ledger).close()
    return count / elapsed


def _mandates(path: Path, mandates: list[Mandate], audited: bool, other_lines: int) -> float:
    path.unlink(missing_ok=True)
    mine = Ledger(path, durability="none")
    other = Ledger(path, durability="none")  # another worker on the same file
    audit = ServerAudit(mine) if audited else None
    spent = 0.0
    for mandate in mandates:
        for _ in range(other_lines):
            other.append(run="other", kind="denial", meta=_META)
        start = time.perf_counter()
        if audit is not None:
            audit.mandate(mandate)
        else:
            mine.append(
                run=mandate.jti, kind="mandate", jti=mandate.jti, token=mandate.token, meta={"agent": "a"}
            )
        spent += time.perf_counter() - start
    mine.close()
    other.close()
    return len(mandates) / spent


def ledger_audit(config: Config) -> list[Row]:
    key = Identity.generate("ES256", name="server")
    user, agent = Identity.generate("ES256", name="maria"), Identity.generate("ES256", name="agent")
    count = config.append_lines
    new_runs = max(50, count // 200)
    mandates = [
        Mandate.issue(
            user, agent=agent, audience="http://127.0.0.1/mcp", purpose="p", capabilities=["mcp.search"]
        )
        for _ in range(new_runs)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "server.jsonl"
        _appends(path, max(100, count // 10), True, key)  # warm-up
        ours, plain = [], []
        for _ in range(config.rounds):
            ours.append(_appends(path, count, True, key))
            plain.append(_appends(path, count, False, key))
        rows.append(
            Row("13", "server audit append (checkpoint every 1000)", statistics.median(ours), "lines/s",
                "Ledger.append of the same entries", statistics.median(plain), ">= 0.9",
                {"lines": count, "rounds": config.rounds})
        )  # fmt: skip
        ours, plain = [], []
        for _ in range(config.rounds):
            ours.append(_mandates(path, mandates, True, 100))
            plain.append(_mandates(path, mandates, False, 100))
        rows.append(
            Row("13", "new run's mandate filed once (100 foreign lines since)", statistics.median(ours),
                "mandates/s", "plain append of the mandate line", statistics.median(plain), "",
                {"runs": new_runs})
        )  # fmt: skip
        _appends(path, count, False, key)
        with Ledger(path) as ledger:  # a realistic mix: a mandate every 20 lines
            for mandate in mandates:
                ledger.append(run=mandate.jti, kind="mandate", jti=mandate.jti, token=mandate.token, meta={})
        size = path.stat().st_size
        opens, reads = [], []
        for _ in range(config.rounds):
            start = time.perf_counter()
            ServerAudit(path).close()
            opens.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _line in LedgerReader(path).lines():
                pass
            reads.append(time.perf_counter() - start)
        rows.append(
            Row("13", "server audit open (scan for mandates)", size / statistics.median(opens) / 1e6, "MB/s",
                "LedgerReader.lines() over the same file", size / statistics.median(reads) / 1e6, "",
                {"bytes": size})
        )  # fmt: skip
    return rows
