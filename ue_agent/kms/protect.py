"""Protection of MIKEY-TICKET messages: algorithm families, message keys, KEMAC, V payload MACs, time.

- Message keys (RFC 6043 5.1.2): from a pre-shared key, MPKi or MPKr', with the direction
  byte (0x01 initial, 0x02 response), the CSB ID and RANDRi / RANDRr.
- KEMAC (RFC 3830 4.2.3, RFC 6043 6.2): AES-CM with ``IV = (S XOR (0x0000 || CSB ID || T)) ||
  0x0000``; T is the 64-bit timestamp of the message carrying the KEMAC (docs/kms.md), NULL MAC.
- V (RFC 6043 5.5 Table 5.2): the MAC covers the message up to the MAC field, followed by the
  identities (initial messages) or by the whole initial message (responses); an Error message's
  MAC covers only itself (5.4). A TRANSFER_INIT's MAC skips the TICKET's Initiator Data fields.
- Algorithm families (RFC 6043 12.1, no mixing of 128- and 256-bit algorithms): PRF MIKEY-1 goes
  with AES-CM-128 and HMAC-SHA-1-160, PRF-HMAC-SHA-256 with AES-CM-256 and HMAC-SHA-256-256.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ue_agent.crypto import mikey_prf
from ue_agent.errors import MikeyError
from ue_agent.kms import mikey
from ue_agent.secret import Secret

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01
RAND_LEN = 32  # RFC 6043 12.1: RANDs at least as long as the longest PSK/MPK/TGK (256 bits)


@dataclass(frozen=True)
class Family:
    """The algorithms that go together with one PRF (RFC 6043 12.1)."""

    prf_func: int
    encr_alg: int
    encr_len: int
    salt_len: int
    mac_alg: int
    auth_len: int
    key_len: int  # TGK and MPK length: "128-bit algorithms SHALL NOT be used" with longer session keys

    @property
    def mac_len(self) -> int:
        return mikey.MAC_LEN[self.mac_alg]


FAMILIES = {
    mikey.PRF_MIKEY_1: Family(
        mikey.PRF_MIKEY_1, mikey.ENCR_AES_CM_128, 16, 14, mikey.MAC_HMAC_SHA1_160, 20, 16
    ),
    mikey.PRF_HMAC_SHA_256: Family(
        mikey.PRF_HMAC_SHA_256, mikey.ENCR_AES_CM_256, 32, 14, mikey.MAC_HMAC_SHA256_256, 32, 32
    ),
}
_HASH = {mikey.MAC_HMAC_SHA1_160: hashlib.sha1, mikey.MAC_HMAC_SHA256_256: hashlib.sha256}


def family(prf_func: int) -> Family:
    try:
        return FAMILIES[prf_func]
    except KeyError:
        raise MikeyError("mikey.unsupported", "PRF func", prf_func=prf_func) from None


# ---------------------------------------------------------------------------- time


def ntp_utc(unix_time: float) -> int:
    """64-bit NTP-UTC timestamp (seconds since 1900 . 32-bit fraction)."""
    secs = int(unix_time)
    frac = int((unix_time - secs) * (1 << 32)) & 0xFFFFFFFF
    return ((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | frac


def unix_from_ntp(value: int) -> float:
    return (value >> 32) - NTP_EPOCH_OFFSET + (value & 0xFFFFFFFF) / (1 << 32)


def timestamp(now: float | None = None) -> mikey.Timestamp:
    return mikey.Timestamp(mikey.TS_NTP_UTC, ntp_utc(time.time() if now is None else now))


def tr(role: int, unix_time: float) -> mikey.TimestampRole:
    """A TR payload in NTP-UTC-32 (RFC 6043 6.3: validity periods, whole seconds)."""
    return mikey.TimestampRole(role, mikey.TS_NTP_UTC_32, (int(unix_time) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF)


def unix_of(ts: mikey.Timestamp | mikey.TimestampRole) -> float:
    if ts.ts_type == mikey.TS_NTP_UTC_32:
        return float(ts.value - NTP_EPOCH_OFFSET)
    if ts.ts_type in (mikey.TS_NTP_UTC, mikey.TS_NTP):
        return unix_from_ntp(ts.value)
    raise MikeyError("mikey.unsupported", "a COUNTER timestamp cannot carry a time", ts_type=ts.ts_type)


def check_fresh(msg: mikey.Message, now: float, skew: float) -> mikey.Timestamp:
    """The message's T is an NTP time within ``skew`` seconds of ``now`` (else ``mikey.replay``)."""
    t = msg.one(mikey.Timestamp)
    if t.ts_type not in (mikey.TS_NTP_UTC, mikey.TS_NTP, mikey.TS_NTP_UTC_32):
        raise MikeyError("mikey.unsupported", "timestamp type other than NTP", ts_type=t.ts_type)
    if abs(unix_of(t) - now) > skew:
        raise MikeyError("mikey.replay", f"{msg.name} timestamp outside the {skew:.0f} s window")
    return t


# ---------------------------------------------------------------------------- keys


class MessageKeys:
    """encr/salt/auth keys of one MIKEY-TICKET message (RFC 6043 5.1.2), with their family."""

    __slots__ = ("encr", "salt", "auth", "family")

    def __init__(self, encr: Secret, salt: Secret, auth: Secret, fam: Family) -> None:
        self.encr, self.salt, self.auth, self.family = encr, salt, auth, fam

    @classmethod
    def derive(
        cls,
        inkey: Secret,
        csb_id: int,
        direction: int,
        rand_i: bytes | None,
        rand_r: bytes | None,
        prf_func: int,
    ) -> MessageKeys:
        fam = family(prf_func)
        e, s, a = mikey_prf.message_keys(
            inkey.reveal(),
            csb_id,
            direction,
            rand_i,
            rand_r,
            prf_func,
            fam.encr_len,
            fam.salt_len,
            fam.auth_len,
        )
        return cls(Secret(e, "encr_key"), Secret(s, "salt_key"), Secret(a, "auth_key"), fam)

    @classmethod
    def for_ticket(cls, tpk: Secret, rand: bytes, prf_func: int) -> MessageKeys:
        """Keys protecting MIKEY base ticket data (RFC 6043 A.2.1)."""
        fam = family(prf_func)
        e, s, a = mikey_prf.ticket_keys(
            tpk.reveal(), rand, prf_func, fam.encr_len, fam.salt_len, fam.auth_len
        )
        return cls(Secret(e, "encr_key"), Secret(s, "salt_key"), Secret(a, "auth_key"), fam)

    def __repr__(self) -> str:
        return "<MessageKeys>"

    def zeroize(self) -> None:
        for k in (self.encr, self.salt, self.auth):
            k.zeroize()


def _aes_cm(keys: MessageKeys, csb_id: int, t64: int, data: bytes) -> bytes:
    s = keys.salt.reveal()
    x = b"\x00\x00" + csb_id.to_bytes(4, "big") + t64.to_bytes(8, "big")
    iv = bytes(a ^ b for a, b in zip(s, x, strict=True)) + b"\x00\x00"
    enc = Cipher(algorithms.AES(keys.encr.reveal()), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def seal_kemac(keys: MessageKeys, csb_id: int, t: mikey.Timestamp, items: list[mikey.KeyData]) -> mikey.Kemac:
    """A KEMAC encrypted with the family's AES-CM, NULL MAC (the V payload protects it)."""
    plain = mikey.KeyData.encode_all(items)
    return mikey.Kemac(keys.family.encr_alg, _aes_cm(keys, csb_id, t.ntp64, plain))


def open_kemac(keys: MessageKeys, kemac: mikey.Kemac, csb_id: int, t: mikey.Timestamp) -> list[mikey.KeyData]:
    """Decrypt a KEMAC; call only after the V payload verified."""
    if kemac.encr_alg != keys.family.encr_alg or kemac.mac_alg != mikey.MAC_NULL:
        raise MikeyError(
            "mikey.unsupported",
            "KEMAC algorithms do not match the PRF's family (RFC 6043 12.1)",
            encr_alg=kemac.encr_alg,
            mac_alg=kemac.mac_alg,
        )
    return mikey.KeyData.decode_all(_aes_cm(keys, csb_id, t.ntp64, kemac.encr_data))


# ---------------------------------------------------------------------------- V payload


def mac(keys: MessageKeys, data: bytes) -> bytes:
    return hmac.new(keys.auth.reveal(), data, _HASH[keys.family.mac_alg]).digest()


def _covered(msg: mikey.Message) -> bytes:
    """The message up to its MAC field (a TRANSFER_INIT without Initiator Data, RFC 6043 5.5)."""
    v = msg.payloads[-1]
    assert isinstance(v, mikey.Verification)
    if msg.header.data_type == mikey.DT_TRANSFER_INIT:
        raw = msg.encode_without_initiator_data()
    else:
        raw = msg.encode()
    return raw[: len(raw) - len(v.mac)]


def sign(msg: mikey.Message, keys: MessageKeys, follow: bytes = b"") -> bytes:
    """Append the V payload whose MAC covers ``msg`` followed by ``follow`` (identities or the
    initial message, Table 5.2); the encoded message. ``msg`` keeps the V payload."""
    if msg.payloads and isinstance(msg.payloads[-1], mikey.Verification):
        raise ValueError("message already carries a V payload")
    v = mikey.Verification(keys.family.mac_alg, bytes(keys.family.mac_len))
    msg.payloads.append(v)
    v.mac = mac(keys, _covered(msg) + follow)
    return msg.encode()


def verify(raw: bytes, msg: mikey.Message, keys: MessageKeys, follow: bytes = b"") -> None:
    """Check the last payload (V) of the received ``raw`` message: ``mikey.bad_mac`` when it does
    not verify, ``mikey.unsupported`` when its MAC alg is not the PRF's family."""
    if not msg.payloads or not isinstance(msg.payloads[-1], mikey.Verification):
        raise MikeyError("mikey.malformed", f"{msg.name} must end with a V payload")
    if len(msg.all(mikey.Verification)) != 1:
        raise MikeyError("mikey.malformed", f"{msg.name} carries more than one V payload")
    v = msg.payloads[-1]
    if v.mac_alg != keys.family.mac_alg:
        raise MikeyError(
            "mikey.unsupported", "V MAC alg is not the PRF's family (RFC 6043 12.1)", mac_alg=v.mac_alg
        )
    if msg.encode() != bytes(raw):
        raise MikeyError("mikey.malformed", f"{msg.name} is not in canonical form")
    if not hmac.compare_digest(mac(keys, _covered(msg) + follow), v.mac):
        raise MikeyError("mikey.bad_mac", f"{msg.name} failed MAC verification")


def identity(msg: mikey.Message, role: int, fallback: bytes) -> bytes:
    """The ID Data of the message's IDR with ``role``, or what the verifier knows otherwise
    (RFC 6043 5.5 covers identities, not payloads; docs/kms.md "identities when IDR is absent")."""
    found = msg.first(mikey.IdRole, role)
    return found.data if found is not None else fallback
