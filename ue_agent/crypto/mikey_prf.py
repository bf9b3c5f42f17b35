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
