"""SRVCC and IP-mobility state, per media session (sans-IO: inputs in, decisions out).

Inputs: the modem's ``+CIREPH: <srvcch>`` values (TS 27.007 +CIREP: 0 handover started,
1 successful, 2 cancelled, 3 general failure) and address/link changes on the media
interfaces. Outputs: :class:`Decision` values the agent applies to the media key store.

Policy (spec-digest 4.4 and 6.3; the 33.328 text says nothing SRVCC-specific, so this
is ours, documented in docs/api.md "handover"):
- started: sessions keep their keys (the call is still on PS until success).
- success: the voice leg is on CS now; each session's SRTP keys are released and
  zeroized, and the session cannot hand keys out again. A return to PS needs a new
  offer/answer with fresh keys: reusing a master key with a reset index is a two-time pad.
- cancelled / failure: the call stays on PS; sessions go back to ``active``, keys kept.
- an address removed or a link down on a watched interface: every active session is
  marked ``rekey_required`` and the softphone is told; keys stay until it closes them,
  so a media stack that keeps its SRTP context (same SSRC, continuing index) is not cut.
- values outside 0-3 (vSRVCC / CS-to-PS values are not confirmed): reported, no change.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from enum import StrEnum


class SrvccPhase(StrEnum):
    PS = "ps"  # no handover in progress
    STARTED = "srvcc_started"  # +CIREPH: 0 seen
    CS = "cs"  # +CIREPH: 1 seen: the call went to the CS domain


class SessionState(StrEnum):
    ACTIVE = "active"
    HANDOVER_PENDING = "handover_pending"
    HANDED_OVER = "handed_over"  # keys released: on CS now
    REKEY_REQUIRED = "rekey_required"


CIREPH_MEANING = {0: "started", 1: "success", 2: "cancelled", 3: "failure"}


@dataclass(frozen=True)
class Decision:
    """What the agent must do for one session after an input."""

    session: str
    old: SessionState
    new: SessionState
    release_keys: bool = False


@dataclass
class HandoverReport:
    """Result of one input: decisions plus the event body for subscribers."""

    decisions: list[Decision]
    event: dict


@dataclass
class HandoverTracker:
    phase: SrvccPhase = SrvccPhase.PS
    sessions: dict[str, SessionState] = field(default_factory=dict)
    last_cireph: int | None = None

    def add_session(self, session: str) -> None:
        """A new media session: set up on PS, so any finished SRVCC is behind us."""
        if self.phase is SrvccPhase.CS:
            self.phase = SrvccPhase.PS
        self.sessions[session] = SessionState.ACTIVE

    def remove_session(self, session: str) -> None:
        self.sessions.pop(session, None)

    def state_of(self, session: str) -> SessionState | None:
        return self.sessions.get(session)

    def _move(
        self, new: SessionState, only: tuple[SessionState, ...], release: bool = False
    ) -> list[Decision]:
        out = []
        for sid, old in self.sessions.items():
            if old in only and old is not new:
                out.append(Decision(sid, old, new, release))
                self.sessions[sid] = new
        return out

    def on_cireph(self, value: int) -> HandoverReport:
        self.last_cireph = value
        meaning = CIREPH_MEANING.get(value)
        decisions: list[Decision] = []
        if meaning == "started":
            self.phase = SrvccPhase.STARTED
            decisions = self._move(SessionState.HANDOVER_PENDING, (SessionState.ACTIVE,))
        elif meaning == "success":
            self.phase = SrvccPhase.CS
            decisions = self._move(
                SessionState.HANDED_OVER,
                (SessionState.ACTIVE, SessionState.HANDOVER_PENDING, SessionState.REKEY_REQUIRED),
                release=True,
            )
        elif meaning in ("cancelled", "failure"):
            self.phase = SrvccPhase.PS
            decisions = self._move(SessionState.ACTIVE, (SessionState.HANDOVER_PENDING,))
        event = {
            "kind": "srvcc",
            "srvcch": value,
            "meaning": meaning or "unknown",
            "phase": self.phase.value,
            "sessions": {d.session: d.new.value for d in decisions},
        }
        return HandoverReport(decisions, event)

    def on_ip_change(self, ifname: str, what: str) -> HandoverReport:
        """``what``: "address_removed", "link_down", "address_added", "link_up"."""
        decisions: list[Decision] = []
        if what in ("address_removed", "link_down"):
            decisions = self._move(
                SessionState.REKEY_REQUIRED, (SessionState.ACTIVE, SessionState.HANDOVER_PENDING)
            )
        event = {
            "kind": "ip",
            "interface": ifname,
            "change": what,
            "phase": self.phase.value,
            "sessions": {d.session: d.new.value for d in decisions},
        }
        return HandoverReport(decisions, event)

    def snapshot(self, only: Collection[str] | None = None) -> dict:
        """Phase and session counts by state; ``only``: count just these session ids."""
        counts: dict[str, int] = {}
        for sid, s in self.sessions.items():
            if only is not None and sid not in only:
                continue
            counts[s.value] = counts.get(s.value, 0) + 1
        return {"phase": self.phase.value, "last_cireph": self.last_cireph, "sessions": counts}


def parse_cireph(line: str) -> int | None:
    """``+CIREPH: 1`` (or ``+CIREPH:1``) -> 1; anything else -> None."""
    line = line.strip()
    if not line.upper().startswith("+CIREPH:"):
        return None
    value = line[8:].strip().split(",")[0].strip()
    return int(value) if value.isdigit() and len(value) <= 3 else None
