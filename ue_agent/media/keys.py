"""Key material handed to the media stack, one object per crypto session (media stream).

Produced by SDES (:mod:`ue_agent.media.sdes`) and by MIKEY-TICKET (:mod:`ue_agent.kms`),
kept by the session key store, and serialized only for an authorized socket peer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ue_agent.secret import Secret

#: SRTP protection profiles: name -> (master key length, master salt length).
SRTP_SUITES: dict[str, tuple[int, int]] = {
    "AES_CM_128_HMAC_SHA1_80": (16, 14),
    "AES_CM_128_HMAC_SHA1_32": (16, 14),
    "AEAD_AES_128_GCM": (16, 12),
    "AEAD_AES_256_GCM": (32, 12),
}


@dataclass
class SrtpKeys:
    """One SRTP crypto session: suite, master key and salt, and where the index stands."""

    suite: str
    master_key: Secret
    master_salt: Secret
    ssrc: int | None = None  # None: any SSRC (SDES / policy for the whole stream)
    roc: int = 0
    mki: bytes | None = None

    def __post_init__(self) -> None:
        klen, slen = SRTP_SUITES[self.suite]
        if len(self.master_key) != klen or len(self.master_salt) != slen:
            raise ValueError(f"{self.suite} needs a {klen}-byte key and a {slen}-byte salt")

    def to_wire(self) -> dict:
        """JSON form for an authorized socket peer (base64 keys)."""
        return {
            "kind": "srtp",
            "suite": self.suite,
            "master_key": base64.b64encode(self.master_key.reveal()).decode(),
            "master_salt": base64.b64encode(self.master_salt.reveal()).decode(),
            "ssrc": self.ssrc,
            "roc": self.roc,
        }

    def zeroize(self) -> None:
        self.master_key.zeroize()
        self.master_salt.zeroize()


@dataclass
class TlsPskKeys:
    """One TLS crypto session (TCP/TLS/MSRP, TCP/TLS/BFCP): PSK identity and key."""

    identity: str
    key: Secret

    def to_wire(self) -> dict:
        return {
            "kind": "tls-psk",
            "identity": self.identity,
            "key": base64.b64encode(self.key.reveal()).decode(),
        }

    def zeroize(self) -> None:
        self.key.zeroize()


MediaKeys = SrtpKeys | TlsPskKeys
