"""MIKEY PRFs and every key derivation MIKEY-TICKET uses, each written from its clause.

- PRF "MIKEY-1" (PRF func 0): RFC 3830 4.1.2 (HMAC-SHA-1; inkey in 256-bit blocks,
  m = ceil(outkey_len/160)).
- PRF-HMAC-SHA-256 (PRF func 1): RFC 6043 6.1 "constructed as described in Section 4.1.2 of [RFC3830] with the
  differences that HMAC-SHA-256 ... SHALL be used instead of HMAC-SHA-1 and the value 256 SHALL be used
  instead of 160". The 256-bit inkey split is not changed by that sentence, so it stays 256 bits.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from .errors import ERR_INVALID_PRF, reject

PRF_MIKEY_1 = 0
PRF_HMAC_SHA_256 = 1

# RFC 3830 4.1.3 Table 4.1.3 (keys from a TGK) -- used by RFC 6043 5.1.3.
C_TEK = 0x2AD01C64
C_TGK_AUTH = 0x1B5C7973
C_TGK_ENCR = 0x15798CEF
C_TGK_SALT = 0x39A2C14B
# RFC 3830 4.1.4 Table 4.1.4 (keys protecting MIKEY messages) -- used by RFC 6043 5.1.2, 6.10 (Vr), A.2.1.
C_ENCR = 0x150533E1
C_AUTH = 0x2D22AC75
C_SALT = 0x29B88916
# RFC 6043 5.1.1 Table 5.1 (forking) and A.2.2 Table A.1 (MPKi / MPKr from the ticket's MPK).
C_MPKR_FORK = 0x2B288856
C_TGK_FORK = 0x1512B54A
C_MPKI = 0x220E99A2
C_MPKR = 0x1F4D675B

ALL_CONSTANTS = {
    "TEK": C_TEK,
    "TGK auth": C_TGK_AUTH,
    "TGK encr": C_TGK_ENCR,
    "TGK salt": C_TGK_SALT,
    "encr_key": C_ENCR,
    "auth_key": C_AUTH,
    "salt_key": C_SALT,
    "MPKr'": C_MPKR_FORK,
    "TGK'": C_TGK_FORK,
    "MPKi": C_MPKI,
    "MPKr": C_MPKR,
}

_HASHES: dict[int, tuple[Callable[..., object], int]] = {
    PRF_MIKEY_1: (hashlib.sha1, 160),
    PRF_HMAC_SHA_256: (hashlib.sha256, 256),
}


def _p(hash_fn: Callable[..., object], s: bytes, label: bytes, m: int) -> bytes:
    # RFC 3830 4.1.2: P(s, label, m) = HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label),
    # A_0 = label, A_i = HMAC(s, A_(i-1)).
    out = b""
    a = label
    for _ in range(m):
        a = hmac.new(s, a, hash_fn).digest()  # type: ignore[arg-type]
        out += hmac.new(s, a + label, hash_fn).digest()  # type: ignore[arg-type]
    return out


def prf(prf_func: int, inkey: bytes, label: bytes, outkey_len_bits: int) -> bytes:
    """PRF(inkey, label) truncated to outkey_len most significant bits (RFC 3830 4.1.2)."""
    if prf_func not in _HASHES:
        raise reject(
            "rfc6043.prf.unknown",
            "RFC 3830 6.1 / RFC 6043 6.1 Table 6.3",
            f"PRF func {prf_func} is not MIKEY-1 (0) or PRF-HMAC-SHA-256 (1)",
            err_no=ERR_INVALID_PRF,
        )
    if not inkey:
        raise reject("rfc6043.prf.empty_key", "RFC 3830 4.1.2", "inkey of length 0")
    if outkey_len_bits <= 0 or outkey_len_bits % 8:
        raise reject(
            "rfc6043.prf.outlen", "RFC 3830 4.1.2", f"outkey_len {outkey_len_bits} is not whole bytes"
        )
    hash_fn, out_block = _HASHES[prf_func]
    # n = inkey_len / 256 rounded up; s_1 .. s_n, all 256 bits except possibly s_n.
    blocks = [inkey[i : i + 32] for i in range(0, len(inkey), 32)]
    m = -(-outkey_len_bits // out_block)
    acc = bytes(m * out_block // 8)
    for s in blocks:
        acc = bytes(x ^ y for x, y in zip(acc, _p(hash_fn, s, label, m), strict=True))
    return acc[: outkey_len_bits // 8]


def _u32(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _lv8(data: bytes | None) -> bytes:
    data = data or b""
    if len(data) > 255:
        raise reject(
            "rfc6043.prf.rand_len", "RFC 6043 5.1.2", "RAND longer than 255 bytes cannot be labelled"
        )
    return bytes([len(data)]) + data


def label_transport(
    constant: int, csb_id: int, direction: int, randri: bytes | None, randrr: bytes | None
) -> bytes:
    """RFC 6043 5.1.2: constant || 0xFF || CSB ID || 0x01/0x02 || len RANDRi || [RANDRi] || len RANDRr ||
    [RANDRr]."""
    if direction not in (1, 2):
        raise ValueError("direction is 0x01 (initial message) or 0x02 (response)")
    if not randri and not randrr:
        raise reject(
            "rfc6043.prf.no_rand", "RFC 6043 5.1.2", "at least one of RANDRi and RANDRr is always used"
        )
    return _u32(constant) + b"\xff" + _u32(csb_id) + bytes([direction]) + _lv8(randri) + _lv8(randrr)


def transport_keys(
    prf_func: int,
    inkey: bytes,
    csb_id: int,
    direction: int,
    randri: bytes | None,
    randrr: bytes | None,
    *,
    encr_bits: int = 0,
    auth_bits: int = 0,
    salt_bits: int = 0,
) -> tuple[bytes, bytes, bytes]:
    """(encr_key, auth_key, salt_key) per RFC 6043 5.1.2; a length of 0 gives b''."""

    def one(c: int, bits: int) -> bytes:
        return (
            prf(prf_func, inkey, label_transport(c, csb_id, direction, randri, randrr), bits) if bits else b""
        )

    return one(C_ENCR, encr_bits), one(C_AUTH, auth_bits), one(C_SALT, salt_bits)


def label_fork(constant: int, id_data: bytes, randrkms: bytes) -> bytes:
    """RFC 6043 5.1.1: constant || 0xFF || 0xFFFFFFFF || 0x00 || length ID Data (16) || ID Data ||
    length RANDRkms (8) || RANDRkms."""
    if len(id_data) > 0xFFFF:
        raise reject("rfc6043.prf.id_len", "RFC 6043 5.1.1", "ID Data longer than 65535 bytes")
    return (
        _u32(constant)
        + b"\xff\xff\xff\xff\xff\x00"
        + len(id_data).to_bytes(2, "big")
        + id_data
        + _lv8(randrkms)
    )


def fork_key(prf_func: int, key: bytes, constant: int, id_data: bytes, randrkms: bytes) -> bytes:
    """MPKr' (constant C_MPKR_FORK) or TGK' (C_TGK_FORK); outkey_len SHALL equal inkey_len (5.1.1)."""
    return prf(prf_func, key, label_fork(constant, id_data, randrkms), len(key) * 8)


def label_tgk(constant: int, cs_id: int, randri: bytes | None, randrr: bytes | None) -> bytes:
    """RFC 6043 5.1.3: constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || [RANDRi] || len RANDRr ||
    [RANDRr]."""
    if not randri and not randrr:
        raise reject(
            "rfc6043.prf.no_rand", "RFC 6043 5.1.3", "at least one of RANDRi and RANDRr MUST be used"
        )
    return _u32(constant) + bytes([cs_id]) + b"\xff\xff\xff\xff\x03" + _lv8(randri) + _lv8(randrr)


def tek_from_tgk(
    prf_func: int,
    tgk: bytes,
    cs_id: int,
    randri: bytes | None,
    randrr: bytes | None,
    *,
    tek_bits: int,
    salt_bits: int,
) -> tuple[bytes, bytes]:
    """(TEK, salt) from a TGK/TGK'/GTGK per RFC 6043 5.1.3 (constants RFC 3830 4.1.3)."""
    tek = prf(prf_func, tgk, label_tgk(C_TEK, cs_id, randri, randrr), tek_bits)
    salt = prf(prf_func, tgk, label_tgk(C_TGK_SALT, cs_id, randri, randrr), salt_bits) if salt_bits else b""
    return tek, salt


def label_ticket(constant: int, kind: int, rand: bytes) -> bytes:
    """constant || 0xFF || 0xFFFFFFFF || kind || length RAND || RAND.

    kind 0x05: keys from the TPK (RFC 6043 A.2.1); kind 0x06: MPKi/MPKr from the MPK (A.2.2).
    """
    return _u32(constant) + b"\xff\xff\xff\xff\xff" + bytes([kind]) + _lv8(rand)


def tpk_keys(
    prf_func: int, tpk: bytes, rand: bytes, *, encr_bits: int, auth_bits: int, salt_bits: int
) -> tuple[bytes, bytes, bytes]:
    def one(c: int, bits: int) -> bytes:
        return prf(prf_func, tpk, label_ticket(c, 0x05, rand), bits) if bits else b""

    return one(C_ENCR, encr_bits), one(C_AUTH, auth_bits), one(C_SALT, salt_bits)


def mpk_split(prf_func: int, mpk: bytes, rand: bytes) -> tuple[bytes, bytes]:
    """(MPKi, MPKr) from the MPK in the base ticket (RFC 6043 A.2.2); outkey_len = inkey_len."""
    bits = len(mpk) * 8
    return (
        prf(prf_func, mpk, label_ticket(C_MPKI, 0x06, rand), bits),
        prf(prf_func, mpk, label_ticket(C_MPKR, 0x06, rand), bits),
    )


def label_initiator_data(constant: int) -> bytes:
    """RFC 6043 6.10 (Vr in Initiator Data): constant || 0xFF || 0xFFFFFFFF || 0x04."""
    return _u32(constant) + b"\xff\xff\xff\xff\xff\x04"


def vr_auth_key(prf_func: int, mpkr: bytes, bits: int) -> bytes:
    return prf(prf_func, mpkr, label_initiator_data(C_AUTH), bits)
