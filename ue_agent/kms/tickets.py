"""Ticket keys shared by the UEs and the KMS, and the KMS's sealed ticket format.

Key hierarchy (lab profile, docs/kms.md "Keys"): the KMS draws a 256-bit ticket key ``K_t``
per ticket and gives it to the initiator. From it, with the MIKEY PRF (cs_id 0xFE, CSB ID 0):

- ``MPKi = PRF(K_t, "KMSI")``: authenticates TRANSFER_INIT (given to every resolver);
- ``K_r = PRF(K_t, "KMSF" || identity)``: the forking key of responder ``identity``
  (TR 33.828 7.1.4.4), or ``PRF(K_t, "KMSG")`` for every member of a group ticket;
- ``TGK = PRF(K_r, "KMST")`` and ``MPKr = PRF(K_r, "KMSR")``.

A forked responder therefore never learns another responder's keys, while the initiator,
holding ``K_t``, derives the keys of whoever answers.

The ticket data is opaque to UEs: ``version(1) || key_id(4) || nonce(12) || AES-256-GCM(...)``
under a key only the KMS holds, the associated data being version and key id.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ue_agent.crypto import mikey_prf
from ue_agent.errors import KmsError
from ue_agent.secret import Secret

TICKET_TYPE_LAB = 0xFF01  # ticket type of the lab KMS's own format [U]: docs/kms.md
TICKET_VERSION = 1
FLAG_GROUP = 0x01

_TICKET_CS = 0xFE
_C_MPKI = 0x4B4D5349  # "KMSI"
_C_FORK = 0x4B4D5346  # "KMSF"
_C_GROUP = 0x4B4D5347  # "KMSG"
_C_TGK = 0x4B4D5354  # "KMST"
_C_MPKR = 0x4B4D5352  # "KMSR"
KEY_LEN = 32


def _d(key: Secret, const: int, data: bytes, prf_func: int, label: str) -> Secret:
    return Secret(mikey_prf.derive(key.reveal(), const, _TICKET_CS, 0, data, KEY_LEN, prf_func), label)


def mpk_i(k_t: Secret, prf_func: int) -> Secret:
    return _d(k_t, _C_MPKI, b"", prf_func, "MPKi")


def responder_key(k_t: Secret, identity: str | None, prf_func: int) -> Secret:
    """``K_r`` for ``identity`` (canonical), or the group key when ``identity`` is None."""
    if identity is None:
        return _d(k_t, _C_GROUP, b"", prf_func, "K_group")
    return _d(k_t, _C_FORK, identity.encode("utf-8"), prf_func, "K_r")


def tgk(k_r: Secret, prf_func: int) -> Secret:
    return _d(k_r, _C_TGK, b"", prf_func, "TGK")


def mpk_r(k_r: Secret, prf_func: int) -> Secret:
    return _d(k_r, _C_MPKR, b"", prf_func, "MPKr")


@dataclass
class TicketContents:
    """What the KMS sealed into a ticket."""

    ticket_id: bytes
    issued: int
    expiry: int
    flags: int
    prf_func: int
    key: Secret  # K_t
    initiator: str
    recipients: tuple[str, ...]

    @property
    def group(self) -> bool:
        return bool(self.flags & FLAG_GROUP)


class KeyRing:
    """The KMS-only ticket protection keys, by 32-bit key id (rotate by adding a key)."""

    def __init__(self) -> None:
        self._keys: dict[int, Secret] = {}
        self.current = 0

    def add(self, key_id: int, key: Secret | None = None) -> None:
        self._keys[key_id] = key or Secret(os.urandom(32), "kms-ticket-key")
        self.current = key_id

    def get(self, key_id: int) -> Secret | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"<KeyRing {len(self._keys)} keys, current {self.current}>"


def _pack_str(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def seal(ring: KeyRing, t: TicketContents) -> bytes:
    key = ring.get(ring.current)
    if key is None:
        raise KmsError("kms.error", "the KMS has no ticket key")
    if len(t.recipients) > 255:
        raise KmsError("kms.bad_request", "too many recipients in one ticket")
    plain = (
        t.ticket_id
        + struct.pack(">QQBB", t.issued, t.expiry, t.flags, t.prf_func)
        + t.key.reveal()
        + _pack_str(t.initiator)
        + bytes([len(t.recipients)])
        + b"".join(_pack_str(r) for r in t.recipients)
    )
    head = struct.pack(">BI", TICKET_VERSION, ring.current)
    nonce = os.urandom(12)
    return head + nonce + AESGCM(key.reveal()).encrypt(nonce, plain, head)


def open_ticket(ring: KeyRing, data: bytes) -> TicketContents:
    """Decrypt and authenticate a ticket (``kms.ticket_rejected`` when it is not ours or altered)."""
    if len(data) < 5 + 12 + 16 or data[0] != TICKET_VERSION:
        raise KmsError("kms.ticket_rejected", "not a ticket of this KMS")
    key_id = struct.unpack(">I", data[1:5])[0]
    key = ring.get(key_id)
    if key is None:
        raise KmsError("kms.ticket_rejected", "ticket under an unknown KMS key", key_id=key_id)
    try:
        plain = AESGCM(key.reveal()).decrypt(data[5:17], data[17:], data[:5])
    except InvalidTag:
        raise KmsError("kms.ticket_rejected", "ticket failed its integrity check") from None
    try:
        tid = plain[:16]
        issued, expiry, flags, prf_func = struct.unpack(">QQBB", plain[16:34])
        k = Secret(plain[34:66], "K_t")
        pos = 66

        def text() -> str:
            nonlocal pos
            (n,) = struct.unpack(">H", plain[pos : pos + 2])
            if pos + 2 + n > len(plain):
                raise ValueError("string runs past the ticket")
            pos += 2 + n
            return plain[pos - n : pos].decode("utf-8")

        initiator = text()
        count = plain[pos]
        pos += 1
        recipients = tuple(text() for _ in range(count))
        if pos != len(plain) or len(k) != KEY_LEN:
            raise ValueError("ticket length")
    except (struct.error, IndexError, ValueError, UnicodeDecodeError):
        raise KmsError("kms.ticket_rejected", "sealed ticket content is malformed") from None
    return TicketContents(tid, issued, expiry, flags, prf_func, k, initiator, recipients)
