"""The test token endpoint (``tests.support.idp.IdP``) in its own process, for target 3.

    python -m benchmarks._idp_server PORT

An identity provider is always another process; serving it from a thread of the benchmark would make
1,000 waiting callers and the server compete for one interpreter lock. ``GET /count`` answers the
number of token requests received so far.
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from tests.support.idp import IdP

CLIENT_ID, CLIENT_SECRET = "agent", "s3cret"
SUBJECTS = {"alice-sso-token": "alice"}


def main() -> None:
    port = int(sys.argv[1])
    idp = IdP(clients={CLIENT_ID: CLIENT_SECRET}, subjects=SUBJECTS)
    idp.base_url = f"http://127.0.0.1:{port}"

    async def count(request: Request) -> JSONResponse:
        return JSONResponse({"count": idp.count})

    app = Starlette(routes=[Route("/count", count), Mount("/", app=idp.app)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
