"""The socket API's own error codes (``api.*``) and the reply shape every error takes.

Errors from the rest of the agent (``card.*``, ``gba.*``, ``kms.*``, ``mikey.*``,
``media.*``) pass through unchanged: their code and message go on the wire, their
details only when they are JSON-ready. Anything else becomes ``agent.internal`` with a
fixed message, so a stray exception text (which could hold anything) never leaves.
"""

from __future__ import annotations

import json
from typing import Any

from ue_agent.errors import AgentError, ApiError

BAD_JSON = "api.bad_json"
BAD_REQUEST = "api.bad_request"
LINE_TOO_LONG = "api.line_too_long"
UNKNOWN_OP = "api.unknown_op"
TOO_MANY_REQUESTS = "api.too_many_requests"
TOO_MANY_CLIENTS = "api.too_many_clients"
FORBIDDEN = "api.forbidden"
UNSUPPORTED_VERSION = "api.unsupported_version"
IDLE_TIMEOUT = "api.idle_timeout"
EVICTED = "api.evicted"
SHUTTING_DOWN = "api.shutting_down"
INTERNAL = "agent.internal"

#: code -> meaning, for docs/api.md and the tests.
API_CODES: dict[str, str] = {
    BAD_JSON: "the line is not UTF-8 JSON, or is nested too deeply",
    BAD_REQUEST: "not a request object, bad id, or a parameter missing, unknown or of the wrong type",
    LINE_TOO_LONG: "the line exceeded the line limit (65536 bytes); it was discarded up to its newline",
    UNKNOWN_OP: "no such operation in this protocol version",
    TOO_MANY_REQUESTS: "this connection already has max_inflight requests in progress",
    TOO_MANY_CLIENTS: "max_clients connections are open, or max_clients_per_uid of this uid, and none "
    "could be evicted; the connection closes",
    FORBIDDEN: "the peer's uid/gid is not allowed (or no longer, after a reload); the connection closes",
    UNSUPPORTED_VERSION: "hello asked only for protocol versions the agent does not speak",
    IDLE_TIMEOUT: "no request for idle_timeout_s seconds, or a line unfinished for line_timeout_s; "
    "the connection closes",
    EVICTED: "the clients table was full and this connection held nothing (no subscription, "
    "no request in progress); it was closed to make room",
    SHUTTING_DOWN: "the agent is stopping",
    INTERNAL: "an unexpected failure inside the agent (see its log)",
}


def api_error(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(code, message, **details)


def _json_ready(details: dict[str, Any]) -> dict[str, Any] | None:
    try:
        json.dumps(details)
    except (TypeError, ValueError):
        return None
    return details


def error_body(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of a reply for ``exc``; never an arbitrary exception text."""
    if isinstance(exc, AgentError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        details = _json_ready(exc.details) if exc.details else None
        if details:
            body["details"] = details
        return body
    return {"code": INTERNAL, "message": "internal error"}


def error_reply(req_id: Any, exc: BaseException) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": error_body(exc)}
