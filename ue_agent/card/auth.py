"""AUTHENTICATE (INS 88) command data and response parsing (TS 31.102 7.1.2, TS 31.103 7.1.2).

P2 ``81``: 3G / IMS AKA context, data ``10 RAND 10 AUTN``; answer ``DB L RES L CK L IK
[08 Kc]`` or ``DC 0E AUTS``. P2 ``84``: GBA context; bootstrapping ``DD L RAND L AUTN`` ->
``DB L RES`` (CK/IK stay on the card) or ``DC 0E AUTS``; NAF derivation ``DE L NAF_Id L
IMPI`` -> ``DB L Ks_ext_NAF``. SW 9862 (MAC failure) is an outcome, not an error; the
caller maps it before parsing.
"""

from __future__ import annotations

from ue_agent.card.ef import malformed
from ue_agent.card.results import AkaSuccess, AkaSyncFailure, GbaBootstrapRes
from ue_agent.errors import CardError
from ue_agent.secret import Secret

P2_GSM, P2_3G, P2_GBA = 0x80, 0x81, 0x84
TAG_SUCCESS, TAG_SYNC_FAILURE, TAG_GBA_BOOTSTRAP, TAG_GBA_NAF = 0xDB, 0xDC, 0xDD, 0xDE


def _check_challenge(rand: bytes, autn: bytes) -> None:
    if len(rand) != 16 or len(autn) != 16:
        raise CardError("card.invalid_argument", "RAND and AUTN must be 16 bytes each")


def aka_command_data(rand: bytes, autn: bytes) -> bytes:
    _check_challenge(rand, autn)
    return b"\x10" + bytes(rand) + b"\x10" + bytes(autn)


def gba_bootstrap_data(rand: bytes, autn: bytes) -> bytes:
    _check_challenge(rand, autn)
    return bytes([TAG_GBA_BOOTSTRAP, 16]) + bytes(rand) + b"\x10" + bytes(autn)


def gba_naf_data(naf_id: bytes, impi: str) -> bytes:
    impi_b = impi.encode("utf-8")
    if not naf_id or not impi_b or len(naf_id) + len(impi_b) > 251:
        raise CardError("card.invalid_argument", "NAF_Id and IMPI must be non-empty and fit one APDU")
    return bytes([TAG_GBA_NAF, len(naf_id)]) + naf_id + bytes([len(impi_b)]) + impi_b


def _fields(data: bytes, start: int, what: str) -> list[bytes]:
    """Consecutive length-value fields from ``start`` to the end of ``data``."""
    out, i = [], start
    while i < len(data):
        n = data[i]
        if i + 1 + n > len(data):
            raise malformed(what, reason="length runs past the end")
        out.append(data[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def _sync_failure(data: bytes, what: str) -> AkaSyncFailure:
    if len(data) != 16 or data[1] != 14:
        raise malformed(what, reason="AUTS must be 14 bytes")
    return AkaSyncFailure(auts=bytes(data[2:]))


def _success_fields(data: bytes, what: str) -> list[bytes] | AkaSyncFailure:
    """The LV fields after tag DB, or the AUTS of a DC answer (the shared head of AKA answers)."""
    if not data:
        raise malformed(what, reason="empty")
    if data[0] == TAG_SYNC_FAILURE:
        return _sync_failure(data, what)
    if data[0] != TAG_SUCCESS:
        raise malformed(what, reason=f"unknown tag {data[0]:02X}")
    return _fields(data, 1, what)


def parse_aka_response(data: bytes) -> AkaSuccess | AkaSyncFailure:
    """The 3G / IMS AKA answer; RES 4..16 bytes, CK and IK 16, optional Kc 8."""
    what = "AUTHENTICATE response"
    fields = _success_fields(data, what)
    if isinstance(fields, AkaSyncFailure):
        return fields
    if len(fields) not in (3, 4):
        raise malformed(what, reason=f"{len(fields)} fields")
    res, ck, ik = fields[:3]
    kc = fields[3] if len(fields) == 4 else None
    if not 4 <= len(res) <= 16 or len(ck) != 16 or len(ik) != 16 or kc is not None and len(kc) != 8:
        raise malformed(what, reason="field lengths")
    return AkaSuccess(
        res=Secret(res, "RES"),
        ck=Secret(ck, "CK"),
        ik=Secret(ik, "IK"),
        kc=Secret(kc, "Kc") if kc is not None else None,
    )


def parse_gba_bootstrap_response(data: bytes) -> GbaBootstrapRes | AkaSyncFailure:
    what = "GBA bootstrapping response"
    fields = _success_fields(data, what)
    if isinstance(fields, AkaSyncFailure):
        return fields
    if len(fields) != 1 or not 4 <= len(fields[0]) <= 16:
        raise malformed(what, reason="expected RES only")
    return GbaBootstrapRes(res=Secret(fields[0], "RES"))


def parse_gba_naf_response(data: bytes) -> Secret:
    what = "GBA NAF derivation response"
    if not data or data[0] != TAG_SUCCESS:
        raise malformed(what, reason="expected tag DB")
    fields = _fields(data, 1, what)
    if len(fields) != 1 or len(fields[0]) != 32:
        raise malformed(what, reason="Ks_ext_NAF must be 32 bytes")
    return Secret(fields[0], "Ks_ext_NAF")
