"""The MIKEY pseudo-random functions and key derivation (RFC 3830 4.1.2-4.1.4, RFC 6043 6.1).

``P(s, label, m) = HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label)`` with
``A_0 = label`` and ``A_i = HMAC(s, A_{i-1})``. ``PRF(inkey, label)`` cuts inkey into
256-bit chunks (the last one may be shorter, never empty) and XORs ``P`` over them.
MIKEY-1 (PRF func 0) uses HMAC-SHA-1, PRF-HMAC-SHA-256 (PRF func 1) HMAC-SHA-256.

Keys derived from a TGK (4.1.3) use ``label = const || cs_id || csb_id || RAND``;
transport keys from a pre-shared or envelope key (4.1.4) use the same with ``cs_id = 0xFF``.
Pure functions: bytes in, bytes out. Call sites wrap results in :class:`Secret`.
"""

from __future__ import annotations

import hashlib
import hmac

PRF_MIKEY_1 = 0
PRF_HMAC_SHA_256 = 1

_HASH = {PRF_MIKEY_1: hashlib.sha1, PRF_HMAC_SHA_256: hashlib.sha256}
_CHUNK = 32  # inkey chunk: 256 bits

# RFC 3830 4.1.3: keys for a crypto session, derived from the TGK.
TEK_CONST = 0x2AD01C64
SALT_CONST = 0x39A2C14B
AUTH_CONST = 0x1B5C7973
ENCR_CONST = 0x15798CEF
# RFC 3830 4.1.4: transport keys (KEMAC encryption and MAC), derived from the PSK/envelope key.
TRANSPORT_ENCR_CONST = 0x150533E1
TRANSPORT_SALT_CONST = 0x29B88916
TRANSPORT_AUTH_CONST = 0x2D22AC75

TRANSPORT_CS_ID = 0xFF


def supported_prf(prf_func: int) -> bool:
    return prf_func in _HASH


def _p(s: bytes, label: bytes, m: int, hashfn) -> bytes:
    out = bytearray()
    a = label
    for _ in range(m):
        a = hmac.new(s, a, hashfn).digest()
        out += hmac.new(s, a + label, hashfn).digest()
    return bytes(out)


def prf(inkey: bytes, label: bytes, out_len: int, prf_func: int = PRF_MIKEY_1) -> bytes:
    """``PRF(inkey, label)`` truncated to ``out_len`` octets."""
    try:
        hashfn = _HASH[prf_func]
    except KeyError:
        raise ValueError(f"unknown MIKEY PRF function {prf_func}") from None
    if not inkey:
        raise ValueError("MIKEY PRF needs a non-empty inkey")
    if out_len <= 0:
        raise ValueError("output length must be positive")
    block = hashfn().digest_size
    m = -(-out_len // block)
    acc = bytearray(m * block)
    # range() stops before len(inkey): a key whose length is a multiple of 32 gives no empty chunk
    for start in range(0, len(inkey), _CHUNK):
        chunk = _p(inkey[start : start + _CHUNK], label, m, hashfn)
        for i, b in enumerate(chunk):
            acc[i] ^= b
    return bytes(acc[:out_len])


def label(const: int, cs_id: int, csb_id: int, rand: bytes) -> bytes:
    """``const(32) || cs_id(8) || csb_id(32) || RAND`` (RFC 3830 4.1.3)."""
    if not 0 <= cs_id <= 0xFF:
        raise ValueError("cs_id is one octet")
    return const.to_bytes(4, "big") + bytes([cs_id]) + (csb_id & 0xFFFFFFFF).to_bytes(4, "big") + rand


def derive(
    inkey: bytes, const: int, cs_id: int, csb_id: int, rand: bytes, out_len: int, prf_func: int = PRF_MIKEY_1
) -> bytes:
    return prf(inkey, label(const, cs_id, csb_id, rand), out_len, prf_func)


def tek(tgk: bytes, cs_id: int, csb_id: int, rand: bytes, out_len: int, prf_func: int = PRF_MIKEY_1) -> bytes:
    """Traffic-encrypting key (the SRTP master key) of crypto session ``cs_id``."""
    return derive(tgk, TEK_CONST, cs_id, csb_id, rand, out_len, prf_func)


def salt(
    tgk: bytes, cs_id: int, csb_id: int, rand: bytes, out_len: int, prf_func: int = PRF_MIKEY_1
) -> bytes:
    """Salting key (the SRTP master salt) of crypto session ``cs_id``."""
    return derive(tgk, SALT_CONST, cs_id, csb_id, rand, out_len, prf_func)


def transport_keys(
    key: bytes,
    csb_id: int,
    rand: bytes,
    prf_func: int = PRF_MIKEY_1,
    encr_len: int = 16,
    salt_len: int = 14,
    auth_len: int = 20,
) -> tuple[bytes, bytes, bytes]:
    """(encr_key, salt_key, auth_key) protecting KEMAC and V payloads (RFC 3830 4.1.4)."""
    cs = TRANSPORT_CS_ID
    return (
        derive(key, TRANSPORT_ENCR_CONST, cs, csb_id, rand, encr_len, prf_func),
        derive(key, TRANSPORT_SALT_CONST, cs, csb_id, rand, salt_len, prf_func),
        derive(key, TRANSPORT_AUTH_CONST, cs, csb_id, rand, auth_len, prf_func),
    )


# ---------------------------------------------------------------------------- RFC 6043 labels

# RFC 6043 5.1.1 Table 5.1 (forking) and A.2.2 Table A.1 (MPKi/MPKr from the base ticket's MPK).
FORK_MPKR_CONST = 0x2B288856
FORK_TGK_CONST = 0x1512B54A
MPKI_CONST = 0x220E99A2
MPKR_CONST = 0x1F4D675B

DIR_INITIAL = 0x01  # RFC 6043 5.1.2: keys protecting initial messages
DIR_RESPONSE = 0x02  # ... and response messages


def _l8(data: bytes) -> bytes:
    if len(data) > 0xFF:
        raise ValueError("RAND longer than 255 octets")
    return bytes([len(data)]) + data


def _rands(rand_i: bytes | None, rand_r: bytes | None) -> bytes:
    """``length RANDRi || [RANDRi] || length RANDRr || [RANDRr]`` (length 0 when omitted)."""
    return _l8(rand_i or b"") + _l8(rand_r or b"")


def transfer_label(
    const: int, csb_id: int, direction: int, rand_i: bytes | None, rand_r: bytes | None
) -> bytes:
    """RFC 6043 5.1.2: ``constant || 0xFF || CSB ID || 0x01/0x02 || length RANDRi || [RANDRi] ||
    length RANDRr || [RANDRr]``."""
    if direction not in (DIR_INITIAL, DIR_RESPONSE):
        raise ValueError("direction is 0x01 (initial) or 0x02 (response)")
    head = const.to_bytes(4, "big") + b"\xff" + (csb_id & 0xFFFFFFFF).to_bytes(4, "big") + bytes([direction])
    return head + _rands(rand_i, rand_r)


def message_keys(
    inkey: bytes,
    csb_id: int,
    direction: int,
    rand_i: bytes | None,
    rand_r: bytes | None,
    prf_func: int,
    encr_len: int,
    salt_len: int,
    auth_len: int,
) -> tuple[bytes, bytes, bytes]:
    """(encr_key, salt_key, auth_key) protecting a MIKEY-TICKET message (RFC 6043 5.1.2), from a
    pre-shared key, MPKi or MPKr'; the constants are RFC 3830 4.1.4's."""

    def d(const: int, n: int) -> bytes:
        return prf(inkey, transfer_label(const, csb_id, direction, rand_i, rand_r), n, prf_func)

    return (
        d(TRANSPORT_ENCR_CONST, encr_len),
        d(TRANSPORT_SALT_CONST, salt_len),
        d(TRANSPORT_AUTH_CONST, auth_len),
    )


def fork_label(const: int, id_data: bytes, rand_kms: bytes) -> bytes:
    """RFC 6043 5.1.1: ``constant || 0xFF || 0xFFFFFFFF || 0x00 || length ID Data || ID Data ||
    length RANDRkms || RANDRkms`` (ID Data length 16 bits, RANDRkms length 8 bits)."""
    if len(id_data) > 0xFFFF:
        raise ValueError("ID Data longer than 65535 octets")
    head = const.to_bytes(4, "big") + b"\xff\xff\xff\xff\xff\x00"
    return head + len(id_data).to_bytes(2, "big") + id_data + _l8(rand_kms)


def fork(inkey: bytes, const: int, id_data: bytes, rand_kms: bytes, prf_func: int) -> bytes:
    """MPKr' (``FORK_MPKR_CONST``) or TGK' (``FORK_TGK_CONST``): as long as the inkey (5.1.1)."""
    return prf(inkey, fork_label(const, id_data, rand_kms), len(inkey), prf_func)


def tgk_label(const: int, cs_id: int, rand_i: bytes | None, rand_r: bytes | None) -> bytes:
    """RFC 6043 5.1.3: ``constant || CS ID || 0xFFFFFFFF || 0x03 || len RANDRi || [RANDRi] ||
    len RANDRr || [RANDRr]``; the constants are RFC 3830 4.1.3's."""
    if not 0 <= cs_id <= 0xFF:
        raise ValueError("CS ID is one octet")
    return const.to_bytes(4, "big") + bytes([cs_id]) + b"\xff\xff\xff\xff\x03" + _rands(rand_i, rand_r)


def from_tgk(
    tgk: bytes,
    const: int,
    cs_id: int,
    rand_i: bytes | None,
    rand_r: bytes | None,
    out_len: int,
    prf_func: int,
) -> bytes:
    """A TEK (``TEK_CONST``) or salting key (``SALT_CONST``) of crypto session ``cs_id`` (5.1.3)."""
    return prf(tgk, tgk_label(const, cs_id, rand_i, rand_r), out_len, prf_func)


def _ffff_label(const: int, tag: int, tail: bytes) -> bytes:
    return const.to_bytes(4, "big") + b"\xff\xff\xff\xff\xff" + bytes([tag]) + tail


def initiator_data_auth_key(mpk_r: bytes, prf_func: int, auth_len: int) -> bytes:
    """auth_key of the Vr payload in Initiator Data, from MPKr (not forked): RFC 6043 6.10,
    ``constant || 0xFF || 0xFFFFFFFF || 0x04``."""
    return prf(mpk_r, _ffff_label(TRANSPORT_AUTH_CONST, 0x04, b""), auth_len, prf_func)


def ticket_keys(
    tpk: bytes, rand: bytes, prf_func: int, encr_len: int, salt_len: int, auth_len: int
) -> tuple[bytes, bytes, bytes]:
    """(encr_key, salt_key, auth_key) of MIKEY base ticket data from the TPK (RFC 6043 A.2.1):
    ``constant || 0xFF || 0xFFFFFFFF || 0x05 || length RAND || RAND``."""

    def d(const: int, n: int) -> bytes:
        return prf(tpk, _ffff_label(const, 0x05, _l8(rand)), n, prf_func)

    return (
        d(TRANSPORT_ENCR_CONST, encr_len),
        d(TRANSPORT_SALT_CONST, salt_len),
        d(TRANSPORT_AUTH_CONST, auth_len),
    )


def mpk_split(mpk: bytes, rand: bytes, prf_func: int) -> tuple[bytes, bytes]:
    """(MPKi, MPKr) from the base ticket's MPK (RFC 6043 A.2.2): ``constant || 0xFF || 0xFFFFFFFF
    || 0x06 || length RAND || RAND``, each as long as the MPK."""
    return (
        prf(mpk, _ffff_label(MPKI_CONST, 0x06, _l8(rand)), len(mpk), prf_func),
        prf(mpk, _ffff_label(MPKR_CONST, 0x06, _l8(rand)), len(mpk), prf_func),
    )
