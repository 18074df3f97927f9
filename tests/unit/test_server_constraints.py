"""McpRequestVerifier (issue 12): constraints on the server — arguments checked with every other check,
``max_calls`` counted only once the request's replay ids were claimed."""

from __future__ import annotations

import json
from typing import Any

import httpx

from mcpclient_auth._encoding import sha256_b64url
from mcpclient_auth.act import Mandate
from mcpclient_auth.ect import ExecutionContextToken
from mcpclient_auth.httpsig import RequestSigner
from mcpclient_auth.keys import Identity
from mcpclient_auth.server import IncomingHeaders, IncomingRequest, McpRequestVerifier, Rejection
from tests.support.trust import trust_for

URL = "https://hr.example/mcp"
USER = Identity.generate("ES256", name="maria")
AGENT = Identity.generate("ES256", name="hr-agent")
SALARY = {
    "action": "mcp.get_employee_salary",
    "constraints": {"args": {"employee": {"one_of": ["bob"]}}, "max_calls": 2},
}


def salary_request(mandate: Mandate, employee: str) -> IncomingRequest:
    message: dict[str, Any] = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "get_employee_salary", "arguments": {"employee": employee}},
    }
    body = json.dumps(message).encode()
    ect = ExecutionContextToken.mint(
        AGENT,
        audience=[URL],
        exec_act="mcp.get_employee_salary",
        pred=[mandate.jti],
        wid=mandate.jti,
        inp_hash=sha256_b64url(body),
    )
    request = httpx.Request(
        "POST",
        URL,
        content=body,
        headers={
            "content-type": "application/json",
            "act-mandate": mandate.token,
            "execution-context": ect.token,
        },
    )
    RequestSigner(AGENT).sign(request)
    return IncomingRequest("POST", URL, IncomingHeaders(request.headers.raw), request.content)


def code(outcome: object) -> str | None:
    return outcome.error.code if isinstance(outcome, Rejection) else None


def test_a_replayed_request_does_not_use_up_the_budget() -> None:
    verifier = McpRequestVerifier(trust_for(issuers=[USER], agents=[AGENT]), audience=URL)
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=[SALARY])
    first = salary_request(mandate, "bob")
    assert code(verifier.check(first)) is None
    assert code(verifier.check(first)) == "nonce_replayed"  # refused as a replay, not counted
    assert code(verifier.check(salary_request(mandate, "bob"))) is None  # the budget's 2nd call
    assert code(verifier.check(salary_request(mandate, "bob"))) == "constraint_violated"


def test_argument_values_are_refused_before_anything_is_claimed() -> None:
    verifier = McpRequestVerifier(trust_for(issuers=[USER], agents=[AGENT]), audience=URL)
    mandate = Mandate.issue(USER, agent=AGENT, audience=URL, purpose="p", capabilities=[SALARY])
    carol = verifier.check_unclaimed(salary_request(mandate, "carol"))
    assert isinstance(carol, Rejection) and carol.error.code == "constraint_violated" and carol.status == 403
