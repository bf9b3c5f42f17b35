"""SRVCC and IP-mobility inputs, turned into session decisions (sans-IO: inputs in, decisions out).

Inputs: the modem's ``+CIREPH: <srvcch>`` values (TS 27.007 +CIREP: 0 handover started,
1 successful, 2 cancelled, 3 general failure) and address/link changes on the media
interfaces. The sessions and their transitions are the session registry's
(:meth:`ue_agent.media.sessions.SessionRegistry.srvcc`); this tracker keeps the UE's SRVCC
phase, reads the inputs and builds the ``handover`` event. Outputs: :class:`Decision`
values the agent applies to the media key store (release the keys of handed-over sessions).

Policy (TS 33.328 says nothing SRVCC-specific, so this is ours, each case with its reason in
docs/handover.md; summary in docs/api.md
"handover"): see :meth:`~ue_agent.media.sessions.SessionRegistry.srvcc` and
:meth:`~ue_agent.media.sessions.SessionRegistry.ip_lost`; values outside 0-3 (vSRVCC /
CS-to-PS values are not confirmed) are reported and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ue_agent.media.sessions import Decision, HandoverState, MediaSession, SessionRegistry, Srvcc

__all__ = [
    "CIREPH_MEANING",
    "Decision",
    "HandoverReport",
    "HandoverState",
    "HandoverTracker",
    "SrvccPhase",
    "parse_cireph",
]


class SrvccPhase(StrEnum):
    PS = "ps"  # no handover in progress
    STARTED = "srvcc_started"  # +CIREPH: 0 seen
    CS = "cs"  # +CIREPH: 1 seen: the call went to the CS domain


#: TS 27.007 +CIREPH <srvcch>
CIREPH_MEANING = {0: Srvcc.STARTED, 1: Srvcc.SUCCESS, 2: Srvcc.CANCELLED, 3: Srvcc.FAILURE}


@dataclass
class HandoverReport:
    """Result of one input: decisions plus the event body for subscribers."""

    decisions: list[Decision]
    event: dict[str, Any]


@dataclass
class HandoverTracker:
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    phase: SrvccPhase = SrvccPhase.PS
    last_cireph: int | None = None

    def __post_init__(self) -> None:
        self.sessions.on_new = self._new_session

    def _new_session(self, session: MediaSession) -> None:
        """A new media session: set up on PS, so any finished SRVCC is behind us."""
        if self.phase is SrvccPhase.CS:
            self.phase = SrvccPhase.PS

    def state_of(self, session: str, owner: int) -> HandoverState | None:
        s = self.sessions.get(session, owner)
        return s.handover if s is not None else None

    def on_cireph(self, value: int) -> HandoverReport:
        self.last_cireph = value
        meaning = CIREPH_MEANING.get(value)
        decisions: list[Decision] = []
        if meaning is not None:
            self.phase = {Srvcc.STARTED: SrvccPhase.STARTED, Srvcc.SUCCESS: SrvccPhase.CS}.get(
                meaning, SrvccPhase.PS
            )
            decisions = self.sessions.srvcc(meaning)
        event = {
            "kind": "srvcc",
            "srvcch": value,
            "meaning": meaning.value if meaning is not None else "unknown",
            "phase": self.phase.value,
            "sessions": {d.key: d.new.value for d in decisions},
        }
        return HandoverReport(decisions, event)

    def on_ip_change(self, ifname: str, what: str) -> HandoverReport:
        """``what``: "address_removed", "link_down", "address_added", "link_up"."""
        decisions: list[Decision] = []
        if what in ("address_removed", "link_down"):
            decisions = self.sessions.ip_lost()
        event = {
            "kind": "ip",
            "interface": ifname,
            "change": what,
            "phase": self.phase.value,
            "sessions": {d.key: d.new.value for d in decisions},
        }
        return HandoverReport(decisions, event)

    def snapshot(self, owner: int | None = None) -> dict[str, Any]:
        """Phase and session counts by handover state (``owner``: only that uid's sessions)."""
        return {
            "phase": self.phase.value,
            "last_cireph": self.last_cireph,
            "sessions": self.sessions.count_by_handover(owner),
        }


def parse_cireph(line: str) -> int | None:
    """``+CIREPH: 1`` (or ``+CIREPH:1``) -> 1; anything else -> None."""
    line = line.strip()
    if not line.upper().startswith("+CIREPH:"):
        return None
    value = line[8:].strip().split(",")[0].strip()
    return int(value) if value.isdigit() and len(value) <= 3 else None
