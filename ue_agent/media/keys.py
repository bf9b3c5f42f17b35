"""Key material handed to the media stack, one object per crypto session (media stream).

Produced by SDES (:mod:`ue_agent.media.sdes`) and by MIKEY-TICKET (:mod:`ue_agent.kms`),
kept by the session key store, and serialized only for an authorized socket peer.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ue_agent.secret import Secret, SecretText

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

    def to_wire(self, reply: bool = False) -> dict:
        """JSON form for an authorized socket peer (base64 keys). ``reply``: the keys as
        :class:`SecretText` for the API's reply encoder (no str copy of them is made)."""
        return {
            "kind": "srtp",
            "suite": self.suite,
            "master_key": _b64(self.master_key, reply),
            "master_salt": _b64(self.master_salt, reply),
            "ssrc": self.ssrc,
            "roc": self.roc,
            **({"mki": base64.b64encode(self.mki).decode()} if self.mki is not None else {}),
        }

    def zeroize(self) -> None:
        self.master_key.zeroize()
        self.master_salt.zeroize()


@dataclass
class TlsPskKeys:
    """One TLS crypto session (TCP/TLS/MSRP, TCP/TLS/BFCP): PSK identity and key."""

    identity: str
    key: Secret

    def to_wire(self, reply: bool = False) -> dict:
        return {
            "kind": "tls-psk",
            "identity": self.identity,
            "key": _b64(self.key, reply),
        }

    def zeroize(self) -> None:
        self.key.zeroize()


MediaKeys = SrtpKeys | TlsPskKeys


def _b64(key: Secret, reply: bool) -> str | SecretText:
    return SecretText(key) if reply else base64.b64encode(key.reveal()).decode()


@dataclass
class StreamKeys:
    """The keys of one media stream as this agent holds them after negotiation.

    ``tx`` protects what we send, ``rx`` unprotects what we receive. With SDES each side
    sends under the key in its own SDP (RFC 4568), so ``tx`` is our key and ``rx`` the
    peer's. A TLS crypto session (MSRP/BFCP) has one PSK for both ways: ``rx`` is None.
    ``max_packets`` is a lifetime signalled in SDP (the smaller of both sides), None for
    the suite's own limit.
    """

    media: str
    tx: MediaKeys
    rx: MediaKeys | None = None
    tag: int | None = None
    max_packets: int | None = None

    @property
    def suite(self) -> str | None:
        return self.tx.suite if isinstance(self.tx, SrtpKeys) else None

    def to_wire(self, reply: bool = False) -> dict:
        out: dict = {"media": self.media, "tx": self.tx.to_wire(reply)}
        if self.rx is not None:
            out["rx"] = self.rx.to_wire(reply)
        if self.tag is not None:
            out["tag"] = self.tag
        return out

    def zeroize(self) -> None:
        self.tx.zeroize()
        if self.rx is not None:
            self.rx.zeroize()
