"""File identifiers and decoders for the EFs the agent reads (TS 102 221, 31.102, 31.103).

Pure functions, bytes in, values out. Anything that does not parse raises
``CardError("card.malformed_response")``: a card that answers garbage must not turn into
a wrong identity.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ue_agent.errors import CardError

USIM_AID_PREFIX = bytes.fromhex("a0000000871002")
ISIM_AID_PREFIX = bytes.fromhex("a0000000871004")

# --- the EF catalogue ------------------------------------------------------------------
# The one list of the EFs the agent knows: the card layer reads them by these identifiers
# and the soft UICC (ue_agent.lab.uicc_fs) builds its file system from the same entries.


@dataclass(frozen=True)
class EfSpec:
    """One elementary file: where it lives, its identifiers, structure and defining clause."""

    app: str  # "MF", "USIM" or "ISIM"
    name: str  # as the specifications write it
    fid: int
    sfi: int | None  # short file identifier; None: reachable by SELECT only
    linear: bool  # linear fixed (records); False: transparent
    size: int | None  # octets fixed by the specification (transparent EFs); None: set by the content
    clause: str


CATALOGUE: tuple[EfSpec, ...] = (
    EfSpec("MF", "EF_DIR", 0x2F00, 0x1E, True, None, "TS 102 221 13.1"),
    EfSpec("MF", "EF_ICCID", 0x2FE2, 0x02, False, 10, "TS 102 221 13.2"),
    EfSpec("USIM", "EF_IMSI", 0x6F07, 0x07, False, 9, "TS 31.102 4.2.2"),
    EfSpec("USIM", "EF_UST", 0x6F38, 0x04, False, None, "TS 31.102 4.2.8"),
    EfSpec("USIM", "EF_AD", 0x6FAD, 0x03, False, None, "TS 31.102 4.2.18"),
    EfSpec("ISIM", "EF_IMPI", 0x6F02, 0x02, False, None, "TS 31.103 4.2.2"),
    EfSpec("ISIM", "EF_DOMAIN", 0x6F03, 0x05, False, None, "TS 31.103 4.2.3"),
    EfSpec("ISIM", "EF_IMPU", 0x6F04, 0x04, True, None, "TS 31.103 4.2.4"),
    EfSpec("ISIM", "EF_AD", 0x6FAD, 0x03, False, None, "TS 31.103 4.2.5"),
    EfSpec("ISIM", "EF_IST", 0x6F07, 0x07, False, None, "TS 31.103 4.2.7"),  # 6F07 is EF_IMSI in ADF.USIM
    EfSpec("ISIM", "EF_P-CSCF", 0x6F09, None, True, None, "TS 31.103 4.2.8"),
    EfSpec("ISIM", "EF_GBABP", 0x6FD5, None, False, None, "TS 31.103 4.2.9"),
    EfSpec("ISIM", "EF_GBANL", 0x6FD7, None, True, None, "TS 31.103 4.2.10"),
)
_BY_NAME = {(e.app, e.name): e for e in CATALOGUE}


def spec(app: str, name: str) -> EfSpec:
    """The catalogue entry for ``name`` in ``app`` ("MF", "USIM", "ISIM")."""
    return _BY_NAME[(app, name)]


FID_MF = 0x3F00
FID_EF_DIR, FID_EF_ICCID = spec("MF", "EF_DIR").fid, spec("MF", "EF_ICCID").fid
FID_USIM_IMSI, FID_USIM_AD = spec("USIM", "EF_IMSI").fid, spec("USIM", "EF_AD").fid
FID_ISIM_IMPI, FID_ISIM_DOMAIN = spec("ISIM", "EF_IMPI").fid, spec("ISIM", "EF_DOMAIN").fid
FID_ISIM_IMPU, FID_ISIM_IST = spec("ISIM", "EF_IMPU").fid, spec("ISIM", "EF_IST").fid
FID_ISIM_PCSCF, FID_ISIM_GBABP = spec("ISIM", "EF_P-CSCF").fid, spec("ISIM", "EF_GBABP").fid
FID_ISIM_GBANL = spec("ISIM", "EF_GBANL").fid


def _sfi(app: str, name: str) -> int:
    sfi = spec(app, name).sfi
    assert sfi is not None
    return sfi


# Short file identifiers (each EF's clause above gives its SFI): READ BINARY with P1 = 80 | SFI
# reads an EF of the current DF without a SELECT (TS 102 221 11.1.3).
SFI_EF_ICCID = _sfi("MF", "EF_ICCID")  # EF_DIR is read with its FCP, see docs/card.md
SFI_USIM_IMSI, SFI_USIM_AD = _sfi("USIM", "EF_IMSI"), _sfi("USIM", "EF_AD")
SFI_ISIM_IMPI, SFI_ISIM_DOMAIN = _sfi("ISIM", "EF_IMPI"), _sfi("ISIM", "EF_DOMAIN")
SFI_ISIM_IMPU, SFI_ISIM_IST = _sfi("ISIM", "EF_IMPU"), _sfi("ISIM", "EF_IST")

# Bytes to read where the spec fixes what is needed, so no FCP (size) is needed either.
ICCID_SIZE = spec("MF", "EF_ICCID").size or 10
IMSI_SIZE = spec("USIM", "EF_IMSI").size or 9
AD_MNC_BYTES = 4  # TS 31.102 4.2.18: byte 4 holds the MNC length; later bytes are not needed

ISIM_SERVICE_PCSCF, ISIM_SERVICE_GBA, ISIM_SERVICE_HTTP_DIGEST = 1, 2, 3


def malformed(what: str, **details: object) -> CardError:
    return CardError("card.malformed_response", f"malformed {what}", **details)


def iter_tlv(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """Simple BER-TLV (one-byte tags, lengths up to 81 xx); stops at FF/00 padding."""
    out, i = [], 0
    while i < len(data) and data[i] not in (0x00, 0xFF):
        if i + 2 > len(data):
            raise malformed(what, reason="truncated TLV header")
        tag, length = data[i], data[i + 1]
        i += 2
        if length == 0x81:
            if i >= len(data):
                raise malformed(what, reason="truncated TLV length")
            length, i = data[i], i + 1
        elif length > 0x80:
            raise malformed(what, reason="unsupported TLV length")
        if i + length > len(data):
            raise malformed(what, reason="TLV value runs past the end")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def first_tlv(data: bytes, tag: int, what: str) -> bytes | None:
    """Value of ``tag`` at the start of ``data``; None for an empty (FF-filled) record."""
    items = iter_tlv(data, what)
    if not items:
        return None
    if items[0][0] != tag:
        raise malformed(what, reason=f"expected tag {tag:02X}, got {items[0][0]:02X}")
    return items[0][1]


def utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(what, reason="not UTF-8") from None


# --- FCP (TS 102 221 11.1.1.3) ---------------------------------------------------------
@dataclass(frozen=True)
class Fcp:
    size: int | None  # tag 80: bytes in the EF
    record_len: int | None  # linear fixed EFs
    record_count: int | None

    @property
    def linear(self) -> bool:
        return self.record_len is not None


def decode_fcp(data: bytes) -> Fcp:
    body = first_tlv(data, 0x62, "FCP template")
    if body is None:
        raise malformed("FCP template", reason="empty")
    fields = dict(iter_tlv(body, "FCP template"))
    size = int.from_bytes(fields[0x80], "big") if fields.get(0x80) else None
    desc = fields.get(0x82, b"")
    if len(desc) >= 5 and desc[0] & 0x07 in (0x02, 0x06):  # linear fixed / cyclic
        return Fcp(size, int.from_bytes(desc[2:4], "big"), desc[4])
    return Fcp(size, None, None)


# --- EF_DIR ----------------------------------------------------------------------------
def decode_dir_record(rec: bytes) -> bytes | None:
    """The AID of one EF_DIR record (61 L 4F L AID ...), or None for an empty record."""
    template = first_tlv(rec, 0x61, "EF_DIR record")
    if template is None:
        return None
    fields = dict(iter_tlv(template, "EF_DIR record"))
    aid = fields.get(0x4F)
    if aid is None or not 1 <= len(aid) <= 16:
        raise malformed("EF_DIR record", reason="no AID")
    return aid


def find_aid(aids: list[bytes], prefix: bytes) -> bytes | None:
    return next((a for a in aids if a.startswith(prefix)), None)


# --- ISIM ------------------------------------------------------------------------------
def decode_tlv80_string(data: bytes, what: str) -> str | None:
    """EF_IMPI, EF_DOMAIN, an EF_IMPU record: tag 80, UTF-8 value."""
    value = first_tlv(data, 0x80, what)
    return None if value is None else utf8(value, what)


def decode_pcscf(rec: bytes) -> str | None:
    """An EF_P-CSCF record: 80 L <type> <address>; 00 FQDN, 01 IPv4, 02 IPv6."""
    value = first_tlv(rec, 0x80, "EF_P-CSCF record")
    if value is None:
        return None
    if not value:
        raise malformed("EF_P-CSCF record", reason="no address type")
    kind, addr = value[0], value[1:]
    if kind == 0x00:
        return utf8(addr, "EF_P-CSCF record")
    if kind == 0x01 and len(addr) == 4:
        return str(ipaddress.IPv4Address(addr))
    if kind == 0x02 and len(addr) == 16:
        return str(ipaddress.IPv6Address(addr))
    raise malformed("EF_P-CSCF record", reason=f"address type {kind:02X} with {len(addr)} bytes")


def decode_service_table(data: bytes) -> list[int]:
    """EF_IST / EF_UST: service n is bit (n-1)%8 of byte (n-1)//8."""
    return [i * 8 + b + 1 for i, byte in enumerate(data) for b in range(8) if byte >> b & 1]


def encode_gbabp(rand: bytes, btid: str, lifetime: str) -> bytes:
    """EF_GBABP: LV RAND, LV B-TID, LV key lifetime (TS 31.103 4.2.x, TS 31.102 4.2.79)."""
    parts = [rand, btid.encode("utf-8"), lifetime.encode("utf-8")]
    if any(len(p) > 255 for p in parts):
        raise ValueError("EF_GBABP field longer than 255 bytes")
    return b"".join(bytes([len(p)]) + p for p in parts)


# --- USIM ------------------------------------------------------------------------------
def decode_imsi(data: bytes) -> str:
    """EF_IMSI: length, then swapped BCD with the parity nibble first (TS 31.102 4.2.2)."""
    if len(data) < 2 or not 1 <= data[0] <= 8 or data[0] + 1 > len(data):
        raise malformed("EF_IMSI", reason="bad length byte")
    nibbles = []
    for byte in data[1 : 1 + data[0]]:
        nibbles += [byte & 0x0F, byte >> 4]
    digits = nibbles[1:]  # the first nibble is the parity / identity type
    if 0x0F in digits:
        digits = digits[: digits.index(0x0F)]
    if not 6 <= len(digits) <= 15 or any(d > 9 for d in digits):
        raise malformed("EF_IMSI", reason="not 6-15 decimal digits")
    return "".join(map(str, digits))


def decode_mnc_length(ad: bytes) -> int:
    """EF_AD byte 4, low nibble: 2 or 3 (TS 31.102 4.2.18)."""
    if len(ad) < 4 or ad[3] & 0x0F not in (2, 3):
        raise malformed("EF_AD", reason="no MNC length (2 or 3) in byte 4")
    return ad[3] & 0x0F


def decode_iccid(data: bytes) -> str:
    digits = "".join(f"{b & 0x0F:x}{b >> 4:x}" for b in data).rstrip("f")
    if not digits.isdigit():
        raise malformed("EF_ICCID", reason="not BCD digits")
    return digits


@dataclass(frozen=True)
class ImsIdentities:
    impi: str
    impus: list[str]
    domain: str


def identities_from_imsi(imsi: str, mnc_length: int) -> ImsIdentities:
    """TS 23.003 13.3-13.5: identities for a card without ISIM; MNC zero-padded to 3 digits."""
    if mnc_length not in (2, 3) or not imsi.isdigit() or len(imsi) < 3 + mnc_length:
        raise ValueError("IMSI/MNC length do not make an identity")
    mcc, mnc = imsi[:3], imsi[3 : 3 + mnc_length].rjust(3, "0")
    domain = f"ims.mnc{mnc}.mcc{mcc}.3gppnetwork.org"
    impi = f"{imsi}@{domain}"
    return ImsIdentities(impi=impi, impus=[f"sip:{impi}"], domain=domain)
