"""The lab HSS/AuC: Milenage authentication vectors for the subscribers of the lab.

Fed by the same subscriber files as the soft UICC. ``sqn`` in a file is the highest SQN
already used, so the first vector carries ``sqn + 1`` and each further vector the next
value (SQN_HE increments by one; the soft UICC accepts any SQN above the highest it has
seen). Resynchronisation (TS 33.102 6.3.5): the HSS recovers SQN_MS from RAND and AUTS,
rejects an AUTS whose MAC-S does not verify, and continues from SQN_MS + 1.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from ue_agent.crypto.milenage import Milenage
from ue_agent.errors import GbaError
from ue_agent.secret import Secret
from ue_agent.subscriber import Subscriber

SQN_MAX = 2**48 - 1


@dataclass
class AuthVector:
    """One AV (TS 33.102 6.3.2): RAND, AUTN, XRES, CK, IK. Keys are Secrets."""

    impi: str
    rand: bytes
    autn: bytes
    xres: Secret
    ck: Secret
    ik: Secret
    sqn: int

    def __repr__(self) -> str:
        return f"<AuthVector impi={self.impi!r} sqn={self.sqn}>"


class Hss:
    """AuC for a set of subscribers, keyed by IMPI. Thread-safe (one lock)."""

    def __init__(self, subscribers: Iterable[Subscriber], rand_source=os.urandom) -> None:
        self._subs: dict[str, Subscriber] = {}
        self._sqn: dict[str, int] = {}
        for sub in subscribers:
            if sub.impi in self._subs:
                raise GbaError("gba.hss_duplicate", f"two subscribers with IMPI {sub.impi}", impi=sub.impi)
            self._subs[sub.impi] = sub
            self._sqn[sub.impi] = sub.sqn
        self._rand = rand_source
        self._lock = threading.Lock()

    def __contains__(self, impi: str) -> bool:
        return impi in self._subs

    @property
    def impis(self) -> list[str]:
        return list(self._subs)

    def subscriber(self, impi: str) -> Subscriber:
        try:
            return self._subs[impi]
        except KeyError:
            raise GbaError("gba.unknown_user", f"no subscriber {impi!r} in the HSS", impi=impi) from None

    def sqn(self, impi: str) -> int:
        """SQN_HE: the last SQN issued for ``impi``."""
        self.subscriber(impi)
        return self._sqn[impi]

    def _milenage(self, sub: Subscriber) -> Milenage:
        return Milenage(sub.k.reveal(), sub.opc.reveal())

    def vector(self, impi: str) -> AuthVector:
        """A fresh AV with the next SQN."""
        sub = self.subscriber(impi)
        with self._lock:
            sqn = self._sqn[impi] + 1
            if sqn > SQN_MAX:
                raise GbaError("gba.sqn_exhausted", f"SQN space exhausted for {impi}", impi=impi)
            self._sqn[impi] = sqn
        rand = self._rand(16)
        mil = self._milenage(sub)
        sqn_b = sqn.to_bytes(6, "big")
        autn = mil.generate_autn(rand, sqn_b, sub.amf)
        res, ck, ik, _, _ = mil.f2345(rand)
        return AuthVector(impi, rand, autn, Secret(res, "XRES"), Secret(ck, "CK"), Secret(ik, "IK"), sqn)

    def resync(self, impi: str, rand: bytes, auts: bytes) -> int:
        """Take SQN_MS from AUTS (MAC-S checked) as SQN_HE; return it.

        Raises ``gba.resync_failed`` when AUTS is malformed or its MAC-S does not verify.
        """
        sub = self.subscriber(impi)
        if len(rand) != 16 or len(auts) != 14:
            raise GbaError("gba.resync_failed", "RAND must be 16 and AUTS 14 octets", impi=impi)
        sqn_ms = self._milenage(sub).resync_sqn(rand, auts)
        if sqn_ms is None:
            raise GbaError("gba.resync_failed", "AUTS MAC-S does not verify", impi=impi)
        value = int.from_bytes(sqn_ms, "big")
        with self._lock:
            self._sqn[impi] = value
        return value
