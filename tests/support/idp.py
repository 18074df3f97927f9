"""A real OAuth token endpoint for tests: a Starlette app that records, counts and can be told to fail.

    idp = IdP(clients={"agent": "s3cret"}, subjects={"alice-sso-token": "alice"})
    with serve(idp.app) as base_url:
        idp.base_url = base_url
        idp.queue(Reply.unavailable(503))          # the next request answers 503, then normal service
        ... TokenExchange(idp.token_url, client_id="agent", client_secret="s3cret") ...
        idp.count                                   # token requests received
        idp.requests[-1].form["subject_token"]      # ['alice-sso-token']
        IdP.decode(token.token)                     # {'sub': 'alice', 'aud': [...], 'scope': '...', ...}

Grants: RFC 8693 token exchange (also issuing ID-JAGs, ``requested_token_type`` =
``urn:ietf:params:oauth:token-type:id-jag``), Entra-style jwt-bearer on-behalf-of, the generic RFC 7523
jwt-bearer grant (an assertion from ``subjects``, or an ID-JAG another ``IdP`` issued for this one's
``issuer``) and client credentials, at ``/token`` and at Entra's ``/{tenant}/oauth2/v2.0/token``; RFC 8414
metadata at ``/.well-known/oauth-authorization-server``. DPoP (RFC 9449): a ``DPoP`` proof is checked
by :mod:`tests.support.dpop_check` (PyJWT + joserfc, not the SDK's JOSE code) and binds the token
(``token_type=DPoP``, ``cnf.jkt`` in the issued token); ``dpop_nonce`` makes the endpoint demand that
nonce (400 ``use_dpop_nonce`` + ``DPoP-Nonce``), ``dpop_bearer_anyway`` ignores proofs (a downgrade).
Client authentication is checked for real:
``client_secret_basic`` (RFC 6749 §2.3.1 form-urldecoding of id and secret), ``client_secret_post``,
``private_key_jwt`` (the assertion is verified with PyJWT against the registered public key:
signature, ``iss`` = ``sub`` = client id, ``aud`` = the endpoint URL, or the issuer when
``assertion_audience = "issuer"``, ``exp``, unique ``jti``) and
public clients. Issued tokens are opaque to the client but encode (user, audience, resource, scope,
grant, client) so tests can check what was issued for whom. The app runs in the server's thread, so
every piece of shared state is guarded by a lock.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcpclient_auth.keys import PublicKey

from .dpop_check import ProofRejected, check_proof

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_CREDENTIALS = "client_credentials"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ID_JAG_TYPE = "urn:ietf:params:oauth:token-type:id-jag"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``kind="token"`` issues normally, then drops/overrides response members."""

    kind: str = "token"  # "token" | "raw"
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0
    drop: tuple[str, ...] = ()
    override: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def unavailable(cls, status: int = 503, body: bytes = b'{"error":"temporarily_unavailable"}') -> Reply:
        return cls(kind="raw", status=status, body=body)

    @classmethod
    def error(cls, code: str, description: str | None = None, status: int = 400) -> Reply:
        doc: dict[str, Any] = {"error": code}
        if description is not None:
            doc["error_description"] = description
        return cls(kind="raw", status=status, body=json.dumps(doc).encode())

    @classmethod
    def raw(
        cls, body: bytes, status: int = 200, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> Reply:
        return cls(kind="raw", status=status, body=body, content_type=content_type, headers=dict(headers or {}))

    @classmethod
    def token(cls, *, drop: tuple[str, ...] = (), delay: float = 0.0, **override: Any) -> Reply:
        return cls(kind="token", drop=drop, delay=delay, override=override)

    @classmethod
    def slow(cls, delay: float) -> Reply:
        return cls(kind="token", delay=delay)


@dataclass
class RecordedRequest:
    """What the endpoint received: path, lower-cased headers, form fields (repeated ones kept)."""

    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]
    auth_method: str | None = None
    #: the verified DPoP proof's claims and key thumbprint (None: no proof, or it was refused)
    dpop: dict[str, Any] | None = None
    dpop_jkt: str | None = None

    def field(self, name: str) -> str:
        values = self.form.get(name, [])
        assert len(values) == 1, f"expected exactly one {name!r}, got {len(values)}"
        return values[0]

    @property
    def fields(self) -> dict[str, str | list[str]]:
        """The form with single values unwrapped (for whole-body equality asserts)."""
        return {k: v[0] if len(v) == 1 else v for k, v in self.form.items()}


class _Refused(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class IdP:
    """The token endpoint. ``subjects`` maps user tokens (subject token / assertion) to user ids."""

    def __init__(
        self,
        *,
        clients: dict[str, str] | None = None,
        client_keys: dict[str, PublicKey] | None = None,
        public_clients: set[str] | None = None,
        subjects: dict[str, str] | None = None,
        expires_in: int = 3600,
    ) -> None:
        self.clients = dict(clients or {})
        self.client_keys = dict(client_keys or {})
        self.public_clients = set(public_clients or ())
        self.subjects = dict(subjects or {})
        self.expires_in = expires_in
        self.base_url = ""
        #: What a private_key_jwt assertion's ``aud`` must be: "token_endpoint" (the URL) or "issuer".
        self.assertion_audience = "token_endpoint"
        self.metadata: dict[str, Any] | None = None
        #: DPoP: require this nonce in proofs; issue Bearer tokens despite a proof (a downgrade).
        self.dpop_nonce: str | None = None
        self.dpop_bearer_anyway = False
        self._dpop_jtis: set[str] = set()
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._metadata_requests: list[dict[str, str]] = []
        self._replies: deque[Reply] = deque()
        self._seen_jti: set[str] = set()
        self._issued = 0
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
                Route("/.well-known/oauth-protected-resource/{rest:path}", self._metadata, methods=["GET"]),
                Route("/.well-known/oauth-authorization-server", self._server_metadata, methods=["GET"]),
            ]
        )

    # --- test-side API ------------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/token"

    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def metadata_requests(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._metadata_requests)

    def queue(self, *replies: Reply) -> None:
        """The next requests get these answers, in order; afterwards normal issuance resumes."""
        with self._lock:
            self._replies.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._metadata_requests.clear()
            self._replies.clear()
            self._seen_jti.clear()
            self._dpop_jtis.clear()
        self.dpop_nonce = None
        self.dpop_bearer_anyway = False
        self.expires_in = 3600
        self.assertion_audience = "token_endpoint"
        self.metadata = None

    @staticmethod
    def decode(token: str) -> dict[str, Any]:
        """What an issued token says: sub, aud, resource, scope, grant, client, actor, n."""
        prefix, _, payload = token.partition(".")
        assert prefix == "at", "not a token issued by this IdP"
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))

    # --- the endpoint --------------------------------------------------------------------------------

    async def _token(self, request: Request) -> Response:
        body = await request.body()
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        form: dict[str, list[str]] = {}
        for name, value in pairs:
            form.setdefault(name, []).append(value)
        record = RecordedRequest(
            path=request.url.path, headers={k.lower(): v for k, v in request.headers.items()}, form=form
        )
        with self._lock:
            self._requests.append(record)
            reply = self._replies.popleft() if self._replies else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.kind == "raw":
            return Response(reply.body, status_code=reply.status, media_type=reply.content_type, headers=reply.headers)
        proof = request.headers.get("dpop")
        if proof is not None or self.dpop_nonce is not None:
            with self._lock:
                try:
                    record.dpop, record.dpop_jkt = check_proof(
                        proof, "POST", str(request.url), self._dpop_jtis, nonce=self.dpop_nonce
                    )
                except ProofRejected as exc:
                    if str(exc) == "nonce":
                        return JSONResponse(
                            {"error": "use_dpop_nonce"}, status_code=400, headers={"DPoP-Nonce": self.dpop_nonce or ""}
                        )
                    return JSONResponse({"error": "invalid_dpop_proof", "error_description": str(exc)}, status_code=400)
        try:
            record.auth_method, client_id = self._authenticate(request, form)
            document = self._grant(form, client_id, None if self.dpop_bearer_anyway else record.dpop_jkt)
        except _Refused as refused:
            return JSONResponse({"error": refused.error}, status_code=refused.status)
        for name in reply.drop:
            document.pop(name, None)
        document.update(reply.override)
        return JSONResponse(document, status_code=reply.status)

    def _authenticate(self, request: Request, form: dict[str, list[str]]) -> tuple[str, str]:
        methods: list[tuple[str, str]] = []
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                raise _Refused(401, "invalid_client")
            try:
                decoded = base64.b64decode(value, validate=True).decode("ascii")
            except ValueError:
                raise _Refused(401, "invalid_client") from None
            raw_id, sep, raw_secret = decoded.partition(":")
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
            if not sep or self.clients.get(client_id) != secret:
                raise _Refused(401, "invalid_client")
            methods.append(("client_secret_basic", client_id))
        if "client_secret" in form:
            client_id = self._one(form, "client_id")
            if self.clients.get(client_id) != self._one(form, "client_secret"):
                raise _Refused(401, "invalid_client")
            methods.append(("client_secret_post", client_id))
        if "client_assertion" in form:
            methods.append(("private_key_jwt", self._verify_assertion(request, form)))
        if len(methods) > 1:
            raise _Refused(400, "invalid_request")  # RFC 6749 §2.3: exactly one method per request
        if methods:
            return methods[0]
        client_id = self._one(form, "client_id")
        if client_id not in self.public_clients:
            raise _Refused(401, "invalid_client")
        return "none", client_id

    def _verify_assertion(self, request: Request, form: dict[str, list[str]]) -> str:
        if self._one(form, "client_assertion_type") != ASSERTION_TYPE:
            raise _Refused(400, "invalid_request")
        assertion = self._one(form, "client_assertion")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            client_id = unverified["iss"]
            key = self.client_keys[client_id]
            claims = jwt.decode(
                assertion,
                key=key.key,
                algorithms=["ES256", "EdDSA"],
                audience=self.issuer if self.assertion_audience == "issuer" else str(request.url),
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except (jwt.PyJWTError, KeyError):
            raise _Refused(401, "invalid_client") from None
        if claims["sub"] != client_id or form.get("client_id", [client_id]) != [client_id]:
            raise _Refused(401, "invalid_client")
        with self._lock:
            if claims["jti"] in self._seen_jti:
                raise _Refused(401, "invalid_client")
            self._seen_jti.add(claims["jti"])
        return str(client_id)

    def _grant(self, form: dict[str, list[str]], client_id: str, jkt: str | None = None) -> dict[str, Any]:
        grant = self._one(form, "grant_type")
        if grant == TOKEN_EXCHANGE:
            user = self._user(self._one(form, "subject_token"))
            self._one(form, "subject_token_type")
            issued_type = form.get("requested_token_type", [ACCESS_TOKEN_TYPE])[0]
            actor = form.get("actor_token", [None])[0]
        elif grant == JWT_BEARER and "requested_token_use" not in form:
            # RFC 7523 §2.1: any assertion we trust (WIF platform token, or an ID-JAG made for us).
            user = self._assertion_user(self._one(form, "assertion"), form)
            issued_type, actor = None, None
        elif grant == JWT_BEARER:
            if self._one(form, "requested_token_use") != "on_behalf_of" or "scope" not in form:
                raise _Refused(400, "invalid_request")
            if self._one(form, "client_id") != client_id:
                raise _Refused(400, "invalid_request")
            user = self._user(self._one(form, "assertion"))
            issued_type, actor = None, None
        elif grant == CLIENT_CREDENTIALS:
            user, issued_type, actor = None, None, None
        else:
            raise _Refused(400, "unsupported_grant_type")
        scope = form.get("scope", [""])[0]
        with self._lock:
            self._issued += 1
            number = self._issued
        claims: dict[str, Any] = {
            "sub": user or client_id,
            "aud": form.get("audience", []),
            "resource": form.get("resource", []),
            "scope": scope,
            "grant": grant,
            "client": client_id,
            "actor": self.subjects.get(actor) if actor else None,
            "n": number,
        }
        if issued_type == ID_JAG_TYPE:
            claims["issued"] = ID_JAG_TYPE  # an ID-JAG: an assertion for the AS named in audience
        if jkt is not None and issued_type != ID_JAG_TYPE:
            claims["cnf"] = {"jkt": jkt}  # RFC 9449 §6: bound to the proof's key
        token_type = "N_A" if issued_type == ID_JAG_TYPE else "Bearer"
        document: dict[str, Any] = {
            "access_token": "at." + _b64url(json.dumps(claims).encode()),
            "token_type": "DPoP" if "cnf" in claims else token_type,
            "expires_in": self.expires_in,
        }
        if scope:
            document["scope"] = scope
        if issued_type is not None:
            document["issued_token_type"] = issued_type
        return document

    def _assertion_user(self, assertion: str, form: dict[str, list[str]]) -> str:
        if assertion in self.subjects:
            return self.subjects[assertion]
        try:
            claims = IdP.decode(assertion)
        except (AssertionError, ValueError):
            raise _Refused(400, "invalid_grant") from None
        # An ID-JAG must name this server as its audience and the resource asked for now.
        if claims.get("issued") != ID_JAG_TYPE or claims.get("aud") != [self.issuer]:
            raise _Refused(400, "invalid_grant")
        if form.get("resource") and claims.get("resource") != form["resource"]:
            raise _Refused(400, "invalid_target")
        return str(claims["sub"])

    def _user(self, token: str) -> str:
        user = self.subjects.get(token)
        if user is None:
            raise _Refused(400, "invalid_grant")
        return user

    @staticmethod
    def _one(form: dict[str, list[str]], name: str) -> str:
        values = form.get(name, [])
        if len(values) != 1 or not values[0]:
            raise _Refused(400, "invalid_request")
        return values[0]

    # --- RFC 8414 / RFC 9728 metadata -----------------------------------------------------------------

    async def _server_metadata(self, request: Request) -> Response:
        with self._lock:
            self._metadata_requests.append({k.lower(): v for k, v in request.headers.items()})
        return JSONResponse(
            {
                "issuer": self.issuer,
                "token_endpoint": self.token_url,
                "grant_types_supported": [TOKEN_EXCHANGE, JWT_BEARER, CLIENT_CREDENTIALS],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt", "none"],
            }
        )

    async def _metadata(self, request: Request) -> Response:
        with self._lock:
            self._metadata_requests.append({k.lower(): v for k, v in request.headers.items()})
        if self.metadata is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(self.metadata)
