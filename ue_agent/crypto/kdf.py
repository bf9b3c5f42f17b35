"""The generic key derivation function of TS 33.220 Annex B, and the GBA NAF keys.

``S = FC || P0 || L0 || ... || Pn || Ln``, derived key = HMAC-SHA-256(Key, S)
(B.2.0). Character strings are UTF-8 after NFKC normalisation (B.2.1.2).
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

#: Ua security protocol identifiers (TS 33.220 Annex H.3).
UA_HTTP_DIGEST = bytes.fromhex("0100000002")
UA_KMS = bytes.fromhex("0100000006")  # IMS UE <-> KMS (TS 33.328)
UA_TMPI = bytes.fromhex("0100000100")

FC_GBA = 0x01


def _octets(p: bytes | str) -> bytes:
    if isinstance(p, str):
        return unicodedata.normalize("NFKC", p).encode("utf-8")
    return bytes(p)


def kdf_input(fc: int, *params: bytes | str) -> bytes:
    """The string S: FC, then each parameter followed by its 2-octet length."""
    if not 0 <= fc <= 0xFE:
        raise ValueError("FC must be one octet below 0xFF")
    out = bytearray([fc])
    for p in params:
        data = _octets(p)
        if len(data) > 0xFFFF:
            raise ValueError("KDF parameter longer than 65535 octets")
        out += data + len(data).to_bytes(2, "big")
    return bytes(out)


def kdf(key: bytes, fc: int, *params: bytes | str) -> bytes:
    """KDF(Key, S) = HMAC-SHA-256(Key, S), 32 octets."""
    return hmac.new(key, kdf_input(fc, *params), hashlib.sha256).digest()


def naf_id(naf_fqdn: str, ua_id: bytes) -> bytes:
    """NAF_Id = FQDN of the NAF || Ua security protocol identifier (5 octets).

    TS 33.220 Annex H / B.3: the FQDN goes into the KDF as given (no case folding): a
    UE and a NAF that spell it differently derive different keys, as the TS has it."""
    if len(ua_id) != 5:
        raise ValueError("Ua security protocol identifier must be 5 octets")
    return _octets(naf_fqdn) + ua_id


def ks_naf(ks: bytes, rand: bytes, impi: str, nafid: bytes) -> bytes:
    """Ks_NAF (GBA_ME) and Ks_ext_NAF (GBA_U): KDF(Ks, "gba-me", RAND, IMPI, NAF_Id)."""
    return kdf(ks, FC_GBA, b"gba-me", rand, impi, nafid)


def ks_int_naf(ks: bytes, rand: bytes, impi: str, nafid: bytes) -> bytes:
    """Ks_int_NAF (GBA_U, stays on the UICC): KDF(Ks, "gba-u", RAND, IMPI, NAF_Id)."""
    return kdf(ks, FC_GBA, b"gba-u", rand, impi, nafid)
