"""Protection of MIKEY messages with a pre-shared key: V payload MACs, KEMAC encryption, timestamps.

Transport keys come from the pre-shared key with RFC 3830 4.1.4 (cs_id 0xFF, the message's
CSB ID and the initiating message's RAND). KEMAC uses AES-CM-128 with the IV of RFC 3830
4.2.3: ``(salt XOR (0x0000 || CSB ID || T)) || 0x0000``; V uses HMAC-SHA-1-160 over the
message up to the MAC, followed by any ``bind`` octets (a response binds the request's T and
RAND, so it cannot be replayed against another request).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ue_agent.crypto import mikey_prf
from ue_agent.errors import MikeyError
from ue_agent.kms import mikey
from ue_agent.secret import Secret

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


def ntp_utc(unix_time: float) -> int:
    """64-bit NTP-UTC timestamp (seconds since 1900 . 32-bit fraction)."""
    secs = int(unix_time)
    frac = int((unix_time - secs) * (1 << 32)) & 0xFFFFFFFF
    return ((secs + NTP_EPOCH_OFFSET) & 0xFFFFFFFF) << 32 | frac


def unix_from_ntp(value: int) -> float:
    return (value >> 32) - NTP_EPOCH_OFFSET + (value & 0xFFFFFFFF) / (1 << 32)


def timestamp(now: float | None = None) -> mikey.Timestamp:
    return mikey.Timestamp(mikey.TS_NTP_UTC, ntp_utc(time.time() if now is None else now))


def check_fresh(msg: mikey.Message, now: float, skew: float) -> mikey.Timestamp:
    """The message's T is NTP-UTC and within ``skew`` seconds of ``now`` (else ``mikey.replay``)."""
    t = msg.one(mikey.Timestamp)
    if t.ts_type != mikey.TS_NTP_UTC:
        raise MikeyError("mikey.unsupported", "timestamp type other than NTP-UTC", ts_type=t.ts_type)
    if abs(unix_from_ntp(t.value) - now) > skew:
        raise MikeyError("mikey.replay", f"{msg.name} timestamp outside the {skew:.0f} s window")
    return t


class TransportKeys:
    """encr/salt/auth keys derived from a pre-shared key for one CSB ID and RAND."""

    __slots__ = ("encr", "salt", "auth")

    def __init__(self, psk: Secret, csb_id: int, rand: bytes, prf_func: int) -> None:
        if not mikey_prf.supported_prf(prf_func):
            raise MikeyError("mikey.unsupported", "PRF function", prf_func=prf_func)
        e, s, a = mikey_prf.transport_keys(psk.reveal(), csb_id, rand, prf_func)
        self.encr, self.salt, self.auth = Secret(e, "encr"), Secret(s, "salt"), Secret(a, "auth")

    def __repr__(self) -> str:
        return "<TransportKeys>"

    def zeroize(self) -> None:
        for k in (self.encr, self.salt, self.auth):
            k.zeroize()


def _aes_cm(keys: TransportKeys, csb_id: int, t_value: int, data: bytes) -> bytes:
    s = keys.salt.reveal()
    x = b"\x00\x00" + csb_id.to_bytes(4, "big") + t_value.to_bytes(8, "big")
    iv = bytes(a ^ b for a, b in zip(s, x, strict=True)) + b"\x00\x00"
    enc = Cipher(algorithms.AES(keys.encr.reveal()), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def seal_kemac(
    keys: TransportKeys, header: mikey.Header, t: mikey.Timestamp, items: list[mikey.KeyData]
) -> mikey.Kemac:
    """A KEMAC with the key data encrypted under AES-CM-128 (its integrity comes from V)."""
    plain = mikey.KeyData.encode_all(items)
    return mikey.Kemac(mikey.ENCR_AES_CM_128, _aes_cm(keys, header.csb_id, t.value, plain))


def open_kemac(keys: TransportKeys, msg: mikey.Message) -> list[mikey.KeyData]:
    """Decrypt the message's KEMAC. Call only after :func:`verify` accepted the message."""
    kemac = msg.one(mikey.Kemac)
    if kemac.encr_alg != mikey.ENCR_AES_CM_128:
        raise MikeyError("mikey.unsupported", "KEMAC must be AES-CM-128 encrypted", encr_alg=kemac.encr_alg)
    t = msg.one(mikey.Timestamp)
    return mikey.KeyData.decode_all(_aes_cm(keys, msg.header.csb_id, t.value, kemac.encr_data))


def sign(msg: mikey.Message, auth_key: Secret, bind: bytes = b"") -> bytes:
    """Encode ``msg`` with a trailing V payload whose MAC covers it (and ``bind``)."""
    if msg.payloads and isinstance(msg.payloads[-1], mikey.Verification):
        raise ValueError("message already carries a V payload")
    v = mikey.Verification(mikey.MAC_HMAC_SHA1_160, bytes(20))
    msg.payloads.append(v)
    unsigned = msg.encode()
    v.mac = hmac.new(auth_key.reveal(), unsigned[:-20] + bind, hashlib.sha1).digest()
    return unsigned[:-20] + v.mac


def verify(raw: bytes, msg: mikey.Message, auth_key: Secret, bind: bytes = b"") -> None:
    """Check the trailing V payload of the received ``raw`` message (``mikey.bad_mac``)."""
    if not msg.payloads or not isinstance(msg.payloads[-1], mikey.Verification):
        raise MikeyError("mikey.malformed", f"{msg.name} must end with a V payload")
    if len(msg.all(mikey.Verification)) != 1:
        raise MikeyError("mikey.malformed", f"{msg.name} carries more than one V payload")
    v = msg.payloads[-1]
    if v.mac_alg != mikey.MAC_HMAC_SHA1_160:
        raise MikeyError("mikey.unsupported", "V payload MAC algorithm", mac_alg=v.mac_alg)
    want = hmac.new(auth_key.reveal(), raw[:-20] + bind, hashlib.sha1).digest()
    if not hmac.compare_digest(want, v.mac):
        raise MikeyError("mikey.bad_mac", f"{msg.name} failed MAC verification")


def bind_to(request: mikey.Message) -> bytes:
    """Octets a response's MAC covers besides itself: the request's T value and RAND/RANDRi."""
    t = request.one(mikey.Timestamp)
    r = request.first(mikey.Rand)
    rand = r.rand if r else request.one(mikey.RandRole, mikey.RAND_ROLE_I).rand
    return t.value.to_bytes(8, "big") + rand
