"""Keys that protect MIKEY messages (RFC 6043 5.1.2) and KEMAC encryption / decryption (RFC 3830 4.2.3)."""

from __future__ import annotations

from dataclasses import dataclass

from . import algs, prf
from .errors import ERR_INVALID_EA, MikeyReject, reject
from .wire import (
    KD_GTGK,
    KD_GTGK_SALT,
    KD_MPK,
    KD_TEK,
    KD_TEK_SALT,
    KD_TGK,
    KD_TGK_SALT,
    Kemac,
    KeyData,
    T,
    decode_key_data,
    encode_key_data,
)

SESSION_KEY_TYPES = {KD_TGK, KD_TGK_SALT, KD_TEK, KD_TEK_SALT, KD_GTGK, KD_GTGK_SALT}
TGK_TYPES = {KD_TGK, KD_TGK_SALT}


@dataclass(frozen=True)
class ProtKeys:
    """encr_key, auth_key, salt_key for one message (never printed)."""

    encr: bytes
    auth: bytes
    salt: bytes

    def __repr__(self) -> str:
        return f"ProtKeys(encr={len(self.encr)}B, auth={len(self.auth)}B, salt={len(self.salt)}B)"


def salt_bits(encr_alg: int) -> int:
    if encr_alg in (algs.ENC_AES_CM_128, algs.ENC_AES_CM_256):
        return algs.SALT_BITS_AES_CM
    if encr_alg == algs.ENC_AES_KW_128:
        return 64
    return 0


def protection_keys(
    prf_func: int,
    inkey: bytes,
    csb_id: int,
    direction: int,
    randri: bytes | None,
    randrr: bytes | None,
    *,
    mac_alg: int,
    encr_alg: int = algs.ENC_NULL,
) -> ProtKeys:
    """RFC 6043 5.1.2 with the PRF of the HDR (RFC 3830 6.1: "the PRF function that has been/will be used
    for key derivation"); output lengths from the algorithms (RFC 3830 4.2.3, 4.2.4; RFC 6043 6.2)."""
    e, a, s = prf.transport_keys(
        prf_func,
        inkey,
        csb_id,
        direction,
        randri,
        randrr,
        encr_bits=algs.ENC_ALGS.get(encr_alg, 0),
        auth_bits=algs.auth_key_bits(mac_alg),
        salt_bits=salt_bits(encr_alg),
    )
    return ProtKeys(e, a, s)


def encrypt_kemac(
    keys: list[KeyData] | tuple[KeyData, ...], pk: ProtKeys, encr_alg: int, csb_id: int, t: T
) -> Kemac:
    plain = encode_key_data(keys)
    data = algs.kemac_crypt(encr_alg, pk.encr, pk.salt, csb_id, algs.ts_64(t.ts_type, t.value), plain)
    return Kemac(encr_alg, data, algs.MAC_NULL, b"")


def decrypt_kemac(
    k: Kemac, pk: ProtKeys, csb_id: int, t_candidates: list[tuple[str, T]]
) -> tuple[tuple[KeyData, ...], str]:
    """Decrypt and strictly parse the Key data chain.

    Where the text leaves open which T goes into the IV (RFC 3830 4.2.3 says "the timestamp sent by the
    Initiator"; RFC 6043 has the responder send its own fresh T), every candidate is tried; the one whose
    plaintext is a well-formed Key data chain is the reading used. Returns (keys, reading).
    """
    if k.encr_alg == algs.ENC_NULL:
        return decode_key_data(k.encr_data, k.offset + 4), "NULL encryption"
    if k.encr_alg not in (algs.ENC_AES_CM_128, algs.ENC_AES_CM_256):
        raise reject(
            "rfc6043.kemac.encr_alg",
            "RFC 3830 4.2.3",
            f"Encr alg {k.encr_alg} not implemented",
            err_no=ERR_INVALID_EA,
        )
    first_err: MikeyReject | None = None
    seen: set[bytes] = set()
    for label, t in t_candidates:
        t64 = algs.ts_64(t.ts_type, t.value)
        if t64 in seen:
            continue
        seen.add(t64)
        plain = algs.kemac_crypt(k.encr_alg, pk.encr, pk.salt, csb_id, t64, k.encr_data)
        try:
            return decode_key_data(plain), label
        except MikeyReject as e:
            first_err = first_err or e
    raise reject(
        "rfc6043.kemac.decrypt",
        "RFC 3830 4.2.3 / 6.13",
        f"KEMAC: no IV reading ({', '.join(lbl for lbl, _ in t_candidates)}) decrypts to a well-formed "
        f"Key data chain (first error: {first_err.code if first_err else '-'})",
        offset=k.offset,
    )


def check_key_data(
    keys: tuple[KeyData, ...] | list[KeyData],
    where: str,
    *,
    mpks: tuple[int, int],
    algorithms: list[tuple[str, int]],
) -> None:
    """MPKs first and counted (mpks = (min, max)), then only TEK/TGK/GTGK; an SPI for every key (6.2.1);
    no 128-bit algorithm with a session key longer than 128 bits (12.1)."""
    n_mpk = 0
    for i, kd in enumerate(keys):
        if kd.key_type == KD_MPK:
            if i != n_mpk:
                raise reject(
                    "rfc6043.kemac.order",
                    "RFC 6043 4.2.1.5 / 4.2.3.5 / A.1",
                    f"{where}: an MPK after a session key; the KEMAC is MPK(s) || {{TEK|TGK|GTGK}}",
                )
            n_mpk += 1
        elif kd.key_type not in SESSION_KEY_TYPES:
            raise reject("rfc6043.kemac.key_type", "RFC 6043 6.2.1", f"{where}: key type {kd.key_type}")
        if kd.kv_type != 1 or not kd.spi:
            raise reject(
                "rfc6043.kemac.spi",
                "RFC 6043 6.2.1",
                f"{where}: key {i} has KV {kd.kv_type}; an SPI (or MKI) MUST be specified for each key",
            )
        if not kd.key:
            raise reject("rfc6043.kemac.empty_key", "RFC 3830 6.13", f"{where}: key {i} has no key data")
    if not mpks[0] <= n_mpk <= mpks[1]:
        raise reject(
            "rfc6043.kemac.mpk_count",
            "RFC 6043 4.2.1.5 / 4.2.3.5 / A.1",
            f"{where}: {n_mpk} MPK(s); expected {mpks[0]}..{mpks[1]}",
        )
    long_keys = [kd for kd in keys if kd.key_type in SESSION_KEY_TYPES and len(kd.key) > 16]
    # "128-bit algorithms": read as the ones with a 128-bit key (AES-CM-128, AES-KW-128); MIKEY-1 and
    # HMAC-SHA-1-160 are not named 128-bit anywhere in the texts, so they are not refused on this ground.
    small = [a for a in algorithms if a in {("encr", algs.ENC_AES_CM_128), ("encr", algs.ENC_AES_KW_128)}]
    if long_keys and small:
        raise reject(
            "rfc6043.algorithms.key_len",
            "RFC 6043 12.1",
            f"{where}: session keys longer than 128 bits with 128-bit algorithms {sorted(small)}",
        )
