"""MAC and KEMAC encryption algorithms (RFC 3830 4.2.3, 4.2.4, 6.2; RFC 6043 6.2, 12.1)."""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ERR_INVALID_EA, ERR_INVALID_MAC, reject

MAC_NULL = 0
MAC_HMAC_SHA1_160 = 1
MAC_HMAC_SHA256_256 = 2
# MAC alg -> (tag length in bytes, auth_key length in bits). RFC 3830 4.2.4: HMAC-SHA-1 key 160 bits;
# RFC 6043 6.2: HMAC-SHA-256-256 "SHALL be used with a 256-bit authentication key".
MAC_ALGS: dict[int, tuple[int, int]] = {
    MAC_NULL: (0, 0),
    MAC_HMAC_SHA1_160: (20, 160),
    MAC_HMAC_SHA256_256: (32, 256),
}

ENC_NULL = 0
ENC_AES_CM_128 = 1
ENC_AES_KW_128 = 2
ENC_AES_CM_256 = 3
# Encr alg -> encr_key bits. Salt key is 112 bits for AES-CM (RFC 3830 4.2.3).
ENC_ALGS: dict[int, int] = {ENC_NULL: 0, ENC_AES_CM_128: 128, ENC_AES_KW_128: 128, ENC_AES_CM_256: 256}
SALT_BITS_AES_CM = 112


def mac_len(mac_alg: int, *, clause: str, offset: int | None = None) -> int:
    if mac_alg not in MAC_ALGS:
        raise reject(
            "rfc6043.mac_alg.unknown",
            clause,
            f"MAC alg {mac_alg} is not NULL (0), HMAC-SHA-1-160 (1) or HMAC-SHA-256-256 (2)",
            err_no=ERR_INVALID_MAC,
            offset=offset,
        )
    return MAC_ALGS[mac_alg][0]


def auth_key_bits(mac_alg: int) -> int:
    return MAC_ALGS[mac_alg][1]


def compute_mac(mac_alg: int, key: bytes, data: bytes) -> bytes:
    if mac_alg == MAC_NULL:
        return b""
    if mac_alg == MAC_HMAC_SHA1_160:
        return hmac.new(key, data, hashlib.sha1).digest()
    if mac_alg == MAC_HMAC_SHA256_256:
        return hmac.new(key, data, hashlib.sha256).digest()
    raise reject(
        "rfc6043.mac_alg.unknown", "RFC 3830 6.2 / RFC 6043 6.2", f"MAC alg {mac_alg}", err_no=ERR_INVALID_MAC
    )


def ts_64(ts_type: int, value: bytes) -> bytes:
    """The 64-bit T used in the AES-CM IV.

    NTP-UTC / NTP are 64 bits already; COUNTER "SHALL be padded (with leading zeros) to a 64-bit value"
    (RFC 3830 6.6); NTP-UTC-32 "SHALL be padded to a 64-bit NTP-UTC timestamp (with zeroes in the
    fractional second part)" (RFC 6043 6.3).
    """
    if ts_type in (0, 1):
        return value
    if ts_type == 2:
        return bytes(4) + value
    if ts_type == 3:
        return value + bytes(4)
    raise reject("rfc6043.t.type", "RFC 6043 6.3", f"TS type {ts_type}")


def aes_cm_iv(salt: bytes, csb_id: int, t64: bytes) -> bytes:
    """IV = (S XOR (0x0000 || CSB ID || T)) || 0x0000 (RFC 3830 4.2.3), S = 112-bit salting key."""
    if len(salt) != 14 or len(t64) != 8:
        raise ValueError("salt must be 112 bits and T 64 bits")
    mix = b"\x00\x00" + csb_id.to_bytes(4, "big") + t64
    return bytes(a ^ b for a, b in zip(salt, mix, strict=True)) + b"\x00\x00"


def kemac_crypt(encr_alg: int, encr_key: bytes, salt: bytes, csb_id: int, t64: bytes, data: bytes) -> bytes:
    """Encrypt or decrypt KEMAC Encr data (AES-CM is its own inverse)."""
    if encr_alg == ENC_NULL:
        return data
    if encr_alg in (ENC_AES_CM_128, ENC_AES_CM_256):
        if len(encr_key) * 8 != ENC_ALGS[encr_alg]:
            raise ValueError("encr_key length does not match the Encr alg")
        if len(data) > (1 << 16) * 16:
            raise reject("rfc6043.kemac.too_long", "RFC 3830 4.2.3", "AES-CM data longer than 2^23 bits")
        enc = Cipher(algorithms.AES(encr_key), modes.CTR(aes_cm_iv(salt, csb_id, t64))).encryptor()
        return enc.update(data) + enc.finalize()
    raise reject(
        "rfc6043.encr_alg.unsupported",
        "RFC 3830 6.2 / RFC 6043 6.2",
        f"Encr alg {encr_alg} is not implemented here (NULL, AES-CM-128 and AES-CM-256 are)",
        err_no=ERR_INVALID_EA,
    )


# RFC 6043 12.1: the 256-bit algorithms "SHALL NOT be mixed with algorithms using key sizes less than
# 256 bits".
FAMILY_256 = {("prf", 1), ("encr", ENC_AES_CM_256), ("mac", MAC_HMAC_SHA256_256)}
FAMILY_LT256 = {("prf", 0), ("encr", ENC_AES_CM_128), ("encr", ENC_AES_KW_128), ("mac", MAC_HMAC_SHA1_160)}


def check_no_mixing(items: list[tuple[str, int]], where: str) -> None:
    big = [i for i in items if i in FAMILY_256]
    small = [i for i in items if i in FAMILY_LT256]
    if big and small:
        raise reject(
            "rfc6043.algorithms.mixed",
            "RFC 6043 12.1",
            f"{where}: 256-bit algorithms {sorted(big)} mixed with shorter-key algorithms {sorted(small)}",
        )
