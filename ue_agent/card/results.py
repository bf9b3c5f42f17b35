"""What the card answers, as typed values.

AUTHENTICATE has three distinct outcomes (TS 31.102/31.103 7.1.2): success with
RES/CK/IK (and Kc when offered), MAC failure (SW 9862: the network is not authentic),
and synchronisation failure with AUTS. Every other status word is a
:class:`ue_agent.errors.CardError` with a stable code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ue_agent.secret import Secret


@dataclass
class AkaSuccess:
    res: Secret
    ck: Secret
    ik: Secret
    kc: Secret | None = None

    def zeroize(self) -> None:
        for s in (self.res, self.ck, self.ik, self.kc):
            if s is not None:
                s.zeroize()


@dataclass(frozen=True)
class AkaMacFailure:
    """SW 9862: the card found MAC-A wrong; the network is not authentic."""


@dataclass(frozen=True)
class AkaSyncFailure:
    """The card's SQN check failed; AUTS (14 bytes) lets the HSS resynchronise."""

    auts: bytes


AkaOutcome = AkaSuccess | AkaMacFailure | AkaSyncFailure


@dataclass(frozen=True)
class GbaBootstrapRes:
    """GBA_U bootstrapping answer: RES only; Ks stays on the card."""

    res: Secret


@dataclass
class CardIdentities:
    """What ``ue-agent card info`` prints and the agent registers with."""

    application: str  # "isim" or "usim" (identities derived from the IMSI)
    impi: str
    impus: list[str]
    domain: str
    imsi: str | None = None
    iccid: str | None = None
    pcscf: list[str] = field(default_factory=list)
    isim_services: list[int] = field(default_factory=list)
    gba_u: bool = False  # the ISIM service table offers GBA (service 2)
    aid: str | None = None  # hex AID of the application used

    def to_dict(self) -> dict:
        return {
            "application": self.application,
            "aid": self.aid,
            "impi": self.impi,
            "impus": list(self.impus),
            "domain": self.domain,
            "imsi": self.imsi,
            "iccid": self.iccid,
            "pcscf": list(self.pcscf),
            "isim_services": list(self.isim_services),
            "gba_u": self.gba_u,
        }
