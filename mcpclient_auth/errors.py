"""One typed error hierarchy, rooted at :class:`McpClientAuthError`.

Every error has a stable machine-readable ``code`` (used in ledger entries, JSON-RPC error data and
RFC 9457 problem documents) and a human-readable message. Messages never contain a token, a secret or
a private key: callers pass *descriptions* ("the ECT", "kid 'abc…'"), never the credential itself.

    try:
        Mandate.verify(token, trust)
    except TokenExpired:
        ...
    except McpClientAuthError as exc:
        log.warning("rejected: %s (%s)", exc, exc.code)

The hierarchy (``+`` has subclasses, ``-`` has none; "also" names a second base, so that
``except ValueError`` keeps working where a value was malformed):

    * McpClientAuthError
      + ConfigurationError (also ValueError)
        - EndpointInvalid
      + KeyMaterialError
        - KeyFormatError (also ValueError)
        - TrustRolesMissing (also ConfigurationError)
        - TrustRoleConflict (also ValueError)
        - UnknownKey
      + TokenError
        - MalformedToken (also ValueError)
        - InvalidTokenType
        - AlgorithmNotAllowed
        - TokenSignatureInvalid
        - TokenExpired
        - TokenNotYetValid
        - AudienceMismatch
        + ClaimsInvalid (also ValueError)
          - ExtensionTooLarge
        - ReplayDetected
        - DPoPProofInvalid
        - CriticalHeaderUnsupported
        - KeyBindingMismatch
        - RecordMandateMissing
        + MandateError
          - IssuerNotAuthorized
          - CapabilityNotGranted
          + DelegationError
            - PrivilegeEscalation
          - PhaseError
          + ConstraintError
            - ConstraintUnknown
      + MandateDenied
        - ActionMappingError
        - ConstraintViolated
      + JsonRpcError (also ValueError)
        - RequestIdInFlight
      - PrincipalMismatch
      - RunClosed
      - SessionClosed
      - RequestOutOfScope
      + SignatureError
        - SignatureMissing
        - SignatureMalformed (also ValueError)
        - SignatureInvalid
        - SignatureExpired
        + SignaturePolicyError
          - SignatureComponentUncovered
        - SignatureReplay
        - DigestError
        - ComponentError (also ValueError)
      + AuthorizationError
        - MissingSubjectToken
        - TokenExchangeRejected
        - TokenExchangeUnavailable
        + InvalidTokenResponse
          - DPoPNotBound
        - DPoPKeyMissing
        - UpstreamUnauthorized
        + InsufficientScope
          - ScopeNotAllowed
        - NoTokenForPrincipal
        - ChallengeMalformed (also ValueError)
        - ResourceMetadataError
        - AuthorizationServerMetadataError
        - AssertionUnavailable
        - AuthorizationResponseError
        - ClientRegistrationError
        + TokenStoreUnavailable
          - TokenStoreTimeout
      + SessionError
        - SessionNotYours
        - SessionUnknown
      + ServerLimitError
        - ReplayStoreFull
        - ReplayStoreUnavailable
        - BodyTooLarge
        - BodyTimeout
        - TooManyPendingBodies
        - BodyFramingAmbiguous
      - MethodNotAllowed (also ValueError)
      + LedgerError
        - LedgerFormatError (also ValueError)
        - LedgerFileUnsafe
        - LedgerAnchorError
      - DagError
"""

from __future__ import annotations

from typing import Any


class McpClientAuthError(Exception):
    """Root of every error raised by mcpclient-auth.

    ``code`` is stable across releases; ``details`` holds safe, structured context (never secrets).
    """

    code: str = "mcpclient_auth_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description (for ledgers, problem documents and JSON-RPC error data)."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        for key, value in self.details.items():
            if isinstance(value, str | int | float | bool) or value is None:
                out[key] = value
            elif isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
                out[key] = list(value)
        return out


# --- configuration -------------------------------------------------------------------------------


class ConfigurationError(McpClientAuthError, ValueError):
    """An unsafe or contradictory configuration, refused at construction time."""

    code = "configuration_error"


class EndpointInvalid(ConfigurationError):
    """An MCP endpoint URL that cannot be normalised to the one form the request will be sent to
    (userinfo, fragment, a scheme other than http(s), a non-ASCII host, an invalid port ...)."""

    code = "endpoint_invalid"


# --- keys ------------------------------------------------------------------------------------------


class KeyMaterialError(McpClientAuthError):
    """Base for key problems: unreadable key material or an unknown key id."""

    code = "key_error"


class KeyFormatError(KeyMaterialError, ValueError):
    """A key file or JWK could not be read, or holds an unsupported key type."""

    code = "key_format_invalid"


class TrustRolesMissing(KeyMaterialError, ConfigurationError):
    """A mandate path was given a trust store without roles (which key may sign mandates for whom,
    which keys are agent keys). Add them with ``mcpclient-auth keys trust`` or
    :meth:`TrustStore.add_issuer <mcpclient_auth.keys.TrustStore.add_issuer>` /
    :meth:`~mcpclient_auth.keys.TrustStore.add_agent`."""

    code = "trust_roles_missing"


class TrustRoleConflict(KeyMaterialError, ValueError):
    """One key registered both as an issuer (signs mandates) and as an agent key (signs calls)."""

    code = "trust_role_conflict"


class UnknownKey(KeyMaterialError):
    """A ``kid``/``keyid`` that the trust store does not hold."""

    code = "unknown_key"


# --- compact tokens (JWS / JWT) --------------------------------------------------------------------


class TokenError(McpClientAuthError):
    """Base for every ACT / ECT / execution-record verification failure."""

    code = "token_invalid"


class MalformedToken(TokenError, ValueError):
    """Not a well-formed compact JWS (three base64url parts, JSON header and payload)."""

    code = "token_malformed"


class InvalidTokenType(TokenError):
    """The ``typ`` header is not the one expected (e.g. an ECT presented as a mandate)."""

    code = "token_type_invalid"


class AlgorithmNotAllowed(TokenError):
    """The ``alg`` header is outside the allowlist (``none``, HS*, RS*, ...)."""

    code = "algorithm_not_allowed"


class TokenSignatureInvalid(TokenError):
    """The JWS signature does not verify with the key named by ``kid``."""

    code = "token_signature_invalid"


class TokenExpired(TokenError):
    """``exp`` is in the past (beyond the allowed clock skew)."""

    code = "token_expired"


class TokenNotYetValid(TokenError):
    """``iat`` (or ``nbf``) is in the future beyond the allowed clock skew, or the token is too old."""

    code = "token_not_yet_valid"


class AudienceMismatch(TokenError):
    """The verifier is not among the token's ``aud``."""

    code = "audience_mismatch"


class ClaimsInvalid(TokenError, ValueError):
    """A required claim is missing or has the wrong type or format."""

    code = "claims_invalid"


class ExtensionTooLarge(ClaimsInvalid):
    """An ECT ``ect_ext`` object exceeds the size or nesting limits."""

    code = "ect_ext_too_large"


class ReplayDetected(TokenError):
    """A ``jti`` (or signature ``nonce``) was already seen within its validity window."""

    code = "replay_detected"


class DPoPProofInvalid(TokenError):
    """A DPoP proof (RFC 9449 §4.3) that a resource server must refuse; ``reason`` names the check."""

    code = "dpop_proof_invalid"


class CriticalHeaderUnsupported(TokenError):
    """The JWS header declares a ``crit`` extension this verifier does not understand (RFC 7515)."""

    code = "token_crit_unsupported"


class KeyBindingMismatch(TokenError):
    """A token is signed by a key other than the one a mandate binds (``cnf.jkt``)."""

    code = "key_binding_mismatch"


class RecordMandateMissing(TokenError):
    """An execution record verified without its mandate: the agent's key alone signs a record, so
    its mandate claims (``iss``, ``cap``, ...) prove nothing until compared with the verified mandate."""

    code = "record_mandate_missing"


# --- mandates and delegation -----------------------------------------------------------------------


class MandateError(TokenError):
    """Base for mandate semantics errors (capabilities, delegation, phase)."""

    code = "mandate_invalid"


class IssuerNotAuthorized(MandateError):
    """A top-level mandate signed by a key that is not registered as an issuer for its ``iss``.

    ``code`` is ``issuer_not_authorized``, or ``agent_key_not_issuer`` when the signer is an agent key
    (an agent never signs a top-level mandate; it may only delegate one it holds).
    """

    code = "issuer_not_authorized"


class CapabilityNotGranted(MandateError):
    """An action (e.g. an execution record's ``exec_act``) is not among the mandate's ``cap``."""

    code = "capability_not_granted"


class DelegationError(MandateError):
    """A delegation chain is broken (issuer/holder mismatch, depth, expiry beyond the parent)."""

    code = "delegation_invalid"


class PrivilegeEscalation(DelegationError):
    """A sub-mandate claims capabilities its parent does not hold."""

    code = "privilege_escalation"


class PhaseError(MandateError):
    """A phase-1 mandate used where a phase-2 record is expected, or the other way round."""

    code = "phase_invalid"


class ConstraintError(MandateError):
    """A capability's ``constraints`` are malformed: the mandate cannot be used (see :mod:`.constraints`)."""

    code = "constraint_invalid"


class ConstraintUnknown(ConstraintError):
    """A capability carries a constraint that no registered evaluator understands.

    Like a JOSE ``crit`` header nobody implements, it makes the whole mandate unusable: it is refused
    at :class:`~mcpclient_auth.AgentRun` creation and answered 403 by the server, never ignored.
    """

    code = "constraint_unknown"


# --- runtime refusals on the request path -----------------------------------------------------------


class MandateDenied(McpClientAuthError):
    """A call was refused locally, before anything was sent, because the mandate does not allow it."""

    code = "mandate_denied"

    def __init__(self, message: str, *, action: str | None = None, **details: Any) -> None:
        super().__init__(message, action=action, **details)
        self.action = action


class ActionMappingError(MandateDenied):
    """A tool name that cannot be mapped to a legal action name; refused, never rewritten."""

    code = "invalid_action"


class ConstraintViolated(MandateDenied):
    """A granted action was called in a way its capability's constraints forbid (an argument outside
    the allowed values, or the run's call budget ``max_calls`` used up); refused before it was sent
    (client) or before the tool ran (server)."""

    code = "constraint_violated"


class JsonRpcError(McpClientAuthError, ValueError):
    """A request body on the MCP endpoint that is not valid JSON-RPC 2.0."""

    code = "jsonrpc_malformed"


class RequestIdInFlight(JsonRpcError):
    """A request reuses the id of a request still pending in the same MCP session."""

    code = "request_id_in_flight"


class PrincipalMismatch(McpClientAuthError):
    """A run bound to one principal was asked to act for another."""

    code = "principal_mismatch"


class RunClosed(McpClientAuthError):
    """A request was made through a run that has already been closed."""

    code = "run_closed"


class SessionClosed(McpClientAuthError):
    """A tool bound to a held MCP session was called after the session was closed."""

    code = "session_closed"


class RequestOutOfScope(McpClientAuthError):
    """A request through a run's client to the run's origin on a path that is none of its endpoints
    (and no OAuth discovery, token or registration request): refused, never sent unsigned."""

    code = "request_out_of_scope"


# --- HTTP message signatures and digests -----------------------------------------------------------


class SignatureError(McpClientAuthError):
    """Base for RFC 9421 / RFC 9530 failures."""

    code = "signature_invalid"


class SignatureMissing(SignatureError):
    """No ``Signature`` / ``Signature-Input`` (or no label of the expected profile)."""

    code = "signature_missing"


class SignatureMalformed(SignatureError, ValueError):
    """``Signature-Input`` / ``Signature`` is not a valid structured-field dictionary."""

    code = "signature_malformed"


class SignatureInvalid(SignatureError):
    """The signature does not verify over the reconstructed signature base."""

    code = "signature_invalid"


class SignatureExpired(SignatureError):
    """``expires`` has passed, or ``created`` is older than the verifier's max age (or in the future)."""

    code = "signature_expired"


class SignaturePolicyError(SignatureError):
    """A required component, tag or parameter is missing or wrong for the profile."""

    code = "signature_policy_violation"


class SignatureComponentUncovered(SignaturePolicyError):
    """The request carries a header the profile signs when present (``Authorization``, ``DPoP``,
    ``Last-Event-ID``, an ``Mcp-Param-*`` header, ...) but the signature does not cover it."""

    code = "component_uncovered"


class SignatureReplay(SignatureError):
    """A signature ``nonce`` was already seen."""

    code = "nonce_replayed"


class DigestError(SignatureError):
    """``Content-Digest`` is missing, malformed, or does not match the body."""

    code = "content_digest_mismatch"


class ComponentError(SignatureError, ValueError):
    """A covered component is absent or its value cannot be canonicalised (CR/LF, non-ASCII)."""

    code = "component_invalid"


# --- authorization (token sources) ------------------------------------------------------------------


class AuthorizationError(McpClientAuthError):
    """Base for failures to obtain or use a user's access token.

    ``reason`` is one of ``missing_subject_token``, ``exchange_rejected``, ``exchange_unavailable``,
    ``invalid_response``, ``upstream_rejected``; ``retryable`` says whether trying later may help.
    """

    code = "authorization_failed"
    reason: str = "authorization_failed"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        retryable: bool | None = None,
        **details: Any,
    ) -> None:
        if reason is not None:
            self.reason = reason
        if retryable is not None:
            self.retryable = retryable
        super().__init__(message, reason=self.reason, retryable=self.retryable, **details)


class MissingSubjectToken(AuthorizationError):
    """The principal has no subject token (or assertion) to exchange."""

    code = "token_exchange_failed"
    reason = "missing_subject_token"
    retryable = False


class TokenExchangeRejected(AuthorizationError):
    """The identity provider refused the grant (``invalid_grant``, ``invalid_client``, 4xx)."""

    code = "token_exchange_failed"
    reason = "exchange_rejected"
    retryable = False


class TokenExchangeUnavailable(AuthorizationError):
    """The identity provider could not be reached or kept failing (connect/read errors, 429, 5xx)."""

    code = "token_exchange_failed"
    reason = "exchange_unavailable"
    retryable = True


class InvalidTokenResponse(AuthorizationError):
    """The identity provider answered 200 with something that is not a usable token response."""

    code = "token_exchange_failed"
    reason = "invalid_response"
    retryable = False


class DPoPNotBound(InvalidTokenResponse):
    """A token request carried a DPoP proof (RFC 9449 §5) but the answer is not a DPoP-bound token
    (``token_type`` other than ``DPoP``): refused, never used as a bearer token in its place."""

    code = "dpop_not_bound"
    reason = "dpop_not_bound"
    retryable = False


class DPoPKeyMissing(AuthorizationError):
    """A DPoP-bound token is to be sent but no DPoP key can prove it: the token source has no
    ``dpop`` (or another key than the run's ``dpop=``). Nothing was sent."""

    code = "dpop_key_missing"
    reason = "dpop_key_missing"
    retryable = False


class UpstreamUnauthorized(AuthorizationError):
    """The MCP server kept rejecting the user's token (401 after one re-obtain)."""

    code = "upstream_unauthorized"
    reason = "upstream_rejected"
    retryable = False


class InsufficientScope(AuthorizationError):
    """The MCP server asked for more scope than one step-up could obtain (403 ``insufficient_scope``)."""

    code = "insufficient_scope"
    reason = "upstream_rejected"
    retryable = False


class ScopeNotAllowed(InsufficientScope):
    """A 403 ``insufficient_scope`` asked for scopes outside the run's allowlist: no step-up, the
    identity provider is never asked for them."""

    code = "scope_not_allowed"
    reason = "scope_not_allowed"
    retryable = False


class NoTokenForPrincipal(AuthorizationError):
    """A static token source has no (usable) token for this principal; never another user's token.

    ``reason`` is ``unknown_principal`` (no entry), ``token_expired`` (the configured token expired)
    or ``lookup_failed`` (the lookup callable raised).
    """

    code = "no_token_for_principal"
    reason = "unknown_principal"
    retryable = False


class ChallengeMalformed(AuthorizationError, ValueError):
    """A ``WWW-Authenticate`` header that is not a valid RFC 9110 challenge list."""

    code = "www_authenticate_malformed"
    reason = "invalid_challenge"
    retryable = False


class ResourceMetadataError(AuthorizationError):
    """RFC 9728 protected-resource metadata that could not be fetched or is not acceptable."""

    code = "resource_metadata_invalid"
    reason = "invalid_resource_metadata"
    retryable = False


class AuthorizationServerMetadataError(AuthorizationError):
    """RFC 8414 authorization server metadata that could not be fetched or is not acceptable
    (another ``issuer`` than the one it was fetched for, a member of the wrong type)."""

    code = "authorization_server_metadata_invalid"
    reason = "invalid_authorization_server_metadata"
    retryable = False


class AssertionUnavailable(AuthorizationError):
    """The assertion for an RFC 7523 jwt-bearer grant could not be obtained (the callable failed or
    returned nothing usable). Only the failing callable's exception type is reported."""

    code = "token_exchange_failed"
    reason = "assertion_unavailable"
    retryable = False


class AuthorizationResponseError(AuthorizationError):
    """The authorization-code redirect was refused by us or by the authorization server.

    ``reason``: ``access_denied`` (the AS answered with an ``error``), ``state_mismatch``,
    ``issuer_mismatch`` (RFC 9207 ``iss`` missing where required, or not identical to the issuer),
    ``redirect_mismatch`` (not our redirect URI), ``no_code``, ``interaction_failed`` (the user
    interaction callback raised). Never carries the code, the state or the URL.
    """

    code = "authorization_response_invalid"
    reason = "authorization_response_invalid"
    retryable = False


class ClientRegistrationError(AuthorizationError):
    """No client identity usable at this authorization server: no pre-registered ``client_id``, no
    Client ID Metadata Document support, and dynamic client registration absent or refused."""

    code = "client_registration_failed"
    reason = "client_registration_failed"
    retryable = False


class TokenStoreUnavailable(AuthorizationError):
    """The shared token store (Redis/Valkey) could not be used, so no token was obtained.

    Fail closed: the token endpoint was not asked in its place (unless the store was configured with
    ``on_unavailable="fetch"``), because parallel fetches from every worker can revoke a user's grant
    where refresh tokens rotate.
    """

    code = "token_store_unavailable"
    reason = "token_store_unavailable"
    retryable = True


class TokenStoreTimeout(TokenStoreUnavailable):
    """Another worker held the fetch lease for a key longer than the configured wait bound."""

    code = "token_store_timeout"
    reason = "token_store_busy"
    retryable = True


# --- server: MCP session binding ------------------------------------------------------------------


class SessionError(McpClientAuthError):
    """Base for MCP session binding refusals at the server (``http_status`` is the answer's status)."""

    code = "session_invalid"
    http_status = 403


class SessionNotYours(SessionError):
    """A request names an MCP session (``mcp-session-id``) opened by another caller (mandate
    ``iss``/``sub`` or agent key)."""

    code = "session_not_yours"
    http_status = 403


class SessionUnknown(SessionError):
    """A request names an MCP session the middleware has no owner for (never opened through it, or
    its binding expired): answered 404 so that MCP clients start a new session."""

    code = "session_unknown"
    http_status = 404


# --- server limits (availability, not credentials) ------------------------------------------------


class ServerLimitError(McpClientAuthError):
    """The server refused to work on a request because a limit was reached, not because its
    credentials failed: the same request may succeed later. ``status`` is the HTTP status the
    reference middleware answers with; ``retry_after`` (seconds) is set when a retry is sensible."""

    code = "server_limit"
    status = 503

    def __init__(
        self, message: str, *, retry_after: int | None = None, code: str | None = None, **details: Any
    ) -> None:
        super().__init__(message, code=code, **details)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.retry_after is not None


class ReplayStoreFull(ServerLimitError):
    """The replay store has no room for this key's ids until some expire; it refuses rather than
    forget an id that is still inside its validity window (which would let a replay through)."""

    code = "replay_store_full"


class ReplayStoreUnavailable(ServerLimitError):
    """The shared replay store (Redis/Valkey) did not answer in time or at all: fail closed."""

    code = "replay_store_unavailable"


class BodyTooLarge(ServerLimitError):
    """The request body (``Content-Length`` or the bytes received) exceeds the limit."""

    code = "body_too_large"
    status = 413


class BodyTimeout(ServerLimitError):
    """The request body did not arrive completely within the body read deadline."""

    code = "body_timeout"
    status = 408


class TooManyPendingBodies(ServerLimitError):
    """Too many request bodies (or bytes) are being read before their senders are authenticated."""

    code = "too_many_pending_bodies"


class BodyFramingAmbiguous(ServerLimitError):
    """The request carries both ``Content-Length`` and ``Transfer-Encoding``: its body length cannot be
    trusted (RFC 9112 §6.3), so it is refused (400, connection closed) rather than read. Not retryable."""

    code = "body_framing_ambiguous"
    status = 400


class MethodNotAllowed(McpClientAuthError, ValueError):
    """An HTTP method the MCP endpoint does not serve (405): only GET, HEAD, POST and DELETE are
    verified; any other method with a body would skip the JSON-RPC, ECT and capability checks."""

    code = "method_not_allowed"


# --- ledger and DAG ------------------------------------------------------------------------------


class LedgerError(McpClientAuthError):
    """Base for ledger I/O and format errors."""

    code = "ledger_error"


class LedgerFormatError(LedgerError, ValueError):
    """A ledger line that is not a valid v1 entry."""

    code = "ledger_malformed"


class LedgerFileUnsafe(LedgerError):
    """A ledger (or anchor) path that is a symbolic link, not a regular file, or owned by another user."""

    code = "ledger_file_unsafe"


class LedgerAnchorError(LedgerError):
    """An anchor could not record a seal/checkpoint hash, or an anchor file is unreadable."""

    code = "ledger_anchor_failed"


class DagError(McpClientAuthError):
    """An execution DAG violation (unknown predecessor, cycle, too many predecessors)."""

    code = "dag_invalid"


__all__ = [
    "ActionMappingError",
    "AlgorithmNotAllowed",
    "AssertionUnavailable",
    "AudienceMismatch",
    "AuthorizationError",
    "AuthorizationResponseError",
    "AuthorizationServerMetadataError",
    "BodyFramingAmbiguous",
    "BodyTimeout",
    "BodyTooLarge",
    "CapabilityNotGranted",
    "ChallengeMalformed",
    "ClaimsInvalid",
    "ClientRegistrationError",
    "ComponentError",
    "ConfigurationError",
    "ConstraintError",
    "ConstraintUnknown",
    "ConstraintViolated",
    "CriticalHeaderUnsupported",
    "DPoPKeyMissing",
    "DPoPNotBound",
    "DPoPProofInvalid",
    "DagError",
    "DelegationError",
    "DigestError",
    "EndpointInvalid",
    "ExtensionTooLarge",
    "InsufficientScope",
    "InvalidTokenResponse",
    "InvalidTokenType",
    "IssuerNotAuthorized",
    "JsonRpcError",
    "KeyBindingMismatch",
    "KeyFormatError",
    "KeyMaterialError",
    "LedgerAnchorError",
    "LedgerError",
    "LedgerFileUnsafe",
    "LedgerFormatError",
    "MalformedToken",
    "MandateDenied",
    "MandateError",
    "McpClientAuthError",
    "MethodNotAllowed",
    "MissingSubjectToken",
    "NoTokenForPrincipal",
    "PhaseError",
    "PrincipalMismatch",
    "PrivilegeEscalation",
    "RecordMandateMissing",
    "ReplayDetected",
    "ReplayStoreFull",
    "ReplayStoreUnavailable",
    "RequestIdInFlight",
    "RequestOutOfScope",
    "ResourceMetadataError",
    "RunClosed",
    "ScopeNotAllowed",
    "ServerLimitError",
    "SessionClosed",
    "SessionError",
    "SessionNotYours",
    "SessionUnknown",
    "SignatureComponentUncovered",
    "SignatureError",
    "SignatureExpired",
    "SignatureInvalid",
    "SignatureMalformed",
    "SignatureMissing",
    "SignaturePolicyError",
    "SignatureReplay",
    "TokenError",
    "TokenExchangeRejected",
    "TokenExchangeUnavailable",
    "TokenExpired",
    "TokenNotYetValid",
    "TokenSignatureInvalid",
    "TokenStoreTimeout",
    "TokenStoreUnavailable",
    "TooManyPendingBodies",
    "TrustRoleConflict",
    "TrustRolesMissing",
    "UnknownKey",
    "UpstreamUnauthorized",
]
