"""Pre-authentication limits against a real server process (issue 13, finding 2; acceptance 2).

The server runs as its own process (``python -m tests.support.replay_server``) so its resident memory
can be read from ``/proc``. Attack traffic is written on raw sockets (exactly the bytes an attacker
controls: no client library retries or buffers), valid traffic is signed as ``AgentRun`` signs it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from mcpclient_auth.act import Mandate
from mcpclient_auth.demo.serving import free_port
from mcpclient_auth.keys import Identity
from tests.support.replay_server import rss_of, signed_call, worker_process
from tests.support.trust import trust_for

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
BODY_TIMEOUT = 3.0


def _status(data: bytes) -> str:
    return data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/1.1 ") else "closed"


def raw_post(port: int, size: int, extra_headers: str = "") -> str:
    """POST ``size`` bytes; the status the server answered, or how the connection ended."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Length: {size}\r\n{extra_headers}\r\n"
    )
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode("ascii"))
        sent = 0
        try:
            while sent < size:
                piece = chunk[: size - sent]
                conn.sendall(piece)
                sent += len(piece)
        except OSError:
            pass  # the server answered early and closed: what we want
        try:
            return _status(conn.recv(4096))
        except OSError:
            return "reset"


def plausible_headers(agent: Identity) -> str:
    """Headers that pass the screen (a trusted keyid, a mandate header) but verify nothing."""
    return (
        f'Signature-Input: sig1=("@method");created=1;expires=2;nonce="n";keyid="{agent.kid}"\r\n'
        "Signature: sig1=:AAAA:\r\nACT-Mandate: junk\r\n"
    )


def trickle(port: int, agent: Identity, result: dict[str, float | str]) -> None:
    """A body at 1 byte/s; records the status and when it came (bounded: at most 60 bytes)."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\n{plausible_headers(agent)}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode("ascii"))
        started = time.monotonic()
        for _ in range(60):
            try:
                conn.sendall(b"x")
            except OSError:
                break
            readable, _, _ = select.select([conn], [], [], 1.0)
            if readable:
                break
        try:
            result["status"] = _status(conn.recv(4096))
        except OSError:
            result["status"] = "reset"
        result["seconds"] = time.monotonic() - started


def test_unauthenticated_floods_and_slow_bodies_cost_little_and_valid_calls_go_on(tmp_path: Path) -> None:
    user, agent = Identity.generate("ES256", name="maria"), Identity.generate("ES256", name="maria-agent")
    trust_file = trust_for(issuers=[user], agents=[agent]).save(tmp_path / "trust.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    limits = ["--max-pending-body-bytes", str(8 * MiB), "--body-timeout", str(BODY_TIMEOUT)]
    with worker_process(port, trust_file, audience=url, extra=limits) as server, httpx.Client(timeout=30) as client:
        mandate = Mandate.issue(user, capabilities=["mcp.record"], agent=agent, audience=url, purpose="t")

        def valid(note: str) -> int:
            return client.send(signed_call(url, mandate, agent, note)).status_code

        # Warm up every path once (imports, allocator arenas), then take the baseline.
        assert [valid(f"warm {i}") for i in range(5)] == [200] * 5
        for _ in range(3):
            raw_post(port, 4 * MiB)
            raw_post(port, 4 * MiB, plausible_headers(agent))
        time.sleep(0.5)
        baseline = rss_of(server.pid)

        slow: dict[str, float | str] = {}
        slow_thread = threading.Thread(target=trickle, args=(port, agent, slow), daemon=True)
        slow_thread.start()
        valid_statuses: list[int] = []
        flooding = threading.Event()
        flooding.set()

        def valid_traffic() -> None:
            for i in range(400):  # bounded
                if not flooding.is_set():
                    break
                valid_statuses.append(valid(f"during {i}"))
                time.sleep(0.05)

        valid_thread = threading.Thread(target=valid_traffic, daemon=True)
        valid_thread.start()
        peak = baseline
        jobs = [""] * 100 + [plausible_headers(agent)] * 100  # no credentials; a trusted keyid, junk
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(raw_post, port, 4 * MiB, extra) for extra in jobs]
            while not all(f.done() for f in futures):
                peak = max(peak, rss_of(server.pid))
                time.sleep(0.05)
            outcomes = Counter(f.result() for f in futures)
        slow_thread.join(timeout=BODY_TIMEOUT + 30)
        flooding.clear()
        valid_thread.join(timeout=60)
        time.sleep(0.5)
        growth = rss_of(server.pid) - baseline

        print(
            f"\nRSS baseline {baseline / MiB:.1f} MiB, peak +{(peak - baseline) / MiB:.1f} MiB, "
            f"after +{growth / MiB:.1f} MiB; outcomes {dict(outcomes)}; slow body {slow}; "
            f"valid calls during the flood {Counter(valid_statuses)}"
        )
        assert "200" not in outcomes
        assert set(outcomes) <= {"401", "503", "reset", "closed"}
        assert growth < 20 * MiB
        assert slow["status"] == "408"
        assert float(slow["seconds"]) < BODY_TIMEOUT + 5  # generous: the deadline is 3 s
        assert valid_statuses and set(valid_statuses) == {200}
        assert server.calls() == 5 + len(valid_statuses)



def smuggled_chunked_post(port: int, agent: Identity, size: int) -> str:
    """``Content-Length: 100`` plus ``Transfer-Encoding: chunked`` and a ``size``-byte chunk that never
    ends (no last chunk): the status the server answered, or how the connection ended."""
    head = (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 100\r\nTransfer-Encoding: chunked\r\n{plausible_headers(agent)}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head.encode("ascii"))
        with contextlib.suppress(OSError):  # refused and closed before the body: what we want
            conn.sendall(f"{size:x}\r\n".encode("ascii") + b"x" * size + b"\r\n")
        try:
            return _status(conn.recv(4096))
        except OSError:
            return "reset"


def test_content_length_with_chunked_body_is_refused_not_read(tmp_path: Path) -> None:
    # Before the fix the gate charged the declared 100 bytes (nothing: a small body) while h11 read
    # the chunked body up to max_body_bytes: 16 such requests held ~64 MiB against an 8 MiB budget.
    user, agent = Identity.generate("ES256", name="maria"), Identity.generate("ES256", name="maria-agent")
    trust_file = trust_for(issuers=[user], agents=[agent]).save(tmp_path / "trust.json")
    port = free_port()
    limits = ["--max-pending-body-bytes", str(8 * MiB), "--body-timeout", "6"]
    with worker_process(port, trust_file, audience=f"http://127.0.0.1:{port}/mcp", extra=limits) as server:
        raw_post(port, 1024, plausible_headers(agent))  # warm the request path once
        baseline = rss_of(server.pid)
        peak = baseline
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(smuggled_chunked_post, port, agent, 4 * MiB - 4096) for _ in range(16)]
            while not all(f.done() for f in futures):
                peak = max(peak, rss_of(server.pid))
                time.sleep(0.05)
            outcomes = Counter(f.result() for f in futures)
        print(f"\nRSS peak +{(peak - baseline) / MiB:.1f} MiB; outcomes {dict(outcomes)}")
        assert set(outcomes) <= {"400", "reset", "closed"}
        assert outcomes["400"] >= 1
        assert peak - baseline < 16 * MiB  # 16 bodies read would be ~64 MiB
