"""Errors as values with stable dotted codes.

Every failure the agent reports carries a code such as ``card.absent`` or
``gba.bsf_unreachable``. Codes are a contract (docs/api.md lists them); messages
are for people and must never contain key material.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """A failure with a stable dotted ``code`` and a human ``message``.

    ``details`` holds JSON-ready, non-secret facts (a status word, a URL, a count).
    """

    code: str = "agent.internal"

    def __init__(self, code: str | None = None, message: str = "", **details: Any) -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code
        self.details = details
        super().__init__(f"{self.code}: {self.message}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class CardError(AgentError):
    """The UICC, its reader or modem failed (``card.*``)."""

    code = "card.error"


class TransportError(CardError):
    """The path to the card (PC/SC, AT port) failed (``card.*`` / ``modem.*``)."""

    code = "card.transport"


class GbaError(AgentError):
    code = "gba.error"


class KmsError(AgentError):
    code = "kms.error"


class MikeyError(AgentError):
    code = "mikey.malformed"


class MediaError(AgentError):
    code = "media.error"


class ConfigError(AgentError):
    code = "config.invalid"


class ApiError(AgentError):
    code = "api.bad_request"
