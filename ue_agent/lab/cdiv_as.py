"""The lab CDIV AS (communication diversion application server, TR 33.829 9.2).

It holds the served users' forwarding rules (communication forwarding unconditional: served
user -> diverted-to user), diverts the INVITEs the lab's callers hand it (:meth:`LabCdivAs.divert`:
the SDP's TRANSFER_INIT in, the new target out) and remembers each diversion by the call's ticket.
The lab KMS asks it (:meth:`LabCdivAs.confirm`, the KMS's injected :data:`~ue_agent.kms.divert.CdivQuestion`)
whether a responder is the diverted-to user of a served user for a ticket: only diversions this AS
made are confirmed. In-process, as the HSS is for the BSF: the KMS engine is sans-IO and asks a
callable (docs/kms.md "Communication diversion").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ue_agent.kms import divert, ids, mikey, sdp

DEFAULT_CDIV_AS = "sip:cdiv-as.ims.mnc001.mcc001.3gppnetwork.org"


@dataclass
class Question:
    cdiv_as: str
    served: str
    target: str
    answer: bool | None


@dataclass
class LabCdivAs:
    identity: str = DEFAULT_CDIV_AS
    clock: Callable[[], float] = time.time
    #: how long a diversion is remembered (the KMS asks while the diverted-to user resolves)
    memory_s: float = 3600.0
    rules: dict[str, str] = field(default_factory=dict)
    questions: list[Question] = field(default_factory=list)
    _diverted: dict[tuple[bytes, str], tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.identity = divert.as_identity(self.identity)

    def forward(self, served: str, target: str | None) -> None:
        """Set (or, with None, clear) the served user's unconditional forwarding."""
        with self._lock:
            if target is None:
                self.rules.pop(ids.canonical(served), None)
            else:
                self.rules[ids.canonical(served)] = ids.canonical(target)

    def divert(self, served: str, offer: bytes | str) -> str | None:
        """An INVITE for ``served`` whose SDP carries ``offer`` (the TRANSFER_INIT, raw or as the
        ``a=key-mgmt`` line): the diverted-to user when a rule applies (the INVITE is retargeted
        there and the diversion remembered), else None (delivered to the served user)."""
        raw = sdp.parse(offer) if isinstance(offer, str) else offer
        ticket = mikey.Message.decode(raw).one(mikey.Ticket)
        who = ids.canonical(served)
        with self._lock:
            target = self.rules.get(who)
            if target is not None:
                self._diverted[(divert.ticket_ref(ticket.ticket_data), who)] = (
                    target,
                    self.clock() + self.memory_s,
                )
        return target

    def confirm(self, cdiv_as: str, served: str, target: str, ref: bytes) -> bool | None:
        """The KMS's question: is ``target`` the diverted-to user of ``served`` for the call with
        ticket ``ref``? None when ``cdiv_as`` is not this AS."""
        answer: bool | None = None
        with self._lock:
            if cdiv_as == self.identity:
                now = self.clock()
                for k in [k for k, (_, exp) in self._diverted.items() if exp <= now]:
                    del self._diverted[k]
                got = self._diverted.get((ref, ids.canonical(served)))
                answer = got is not None and got[0] == ids.canonical(target)
            self.questions.append(Question(cdiv_as, served, target, answer))
        return answer
