"""The soft UICC's file system, modelled as data (one builder per application).

MF 3F00 holds EF_DIR and EF_ICCID and the ADFs; each ADF is built in one place
(:func:`usim_adf`, :func:`isim_adf`) from the subscriber file. Which EFs exist, their
FIDs, SFIs and structure come from the card layer's catalogue (:data:`ue_agent.card.ef.CATALOGUE`):
one list for both sides. The encoders here are the card side's own (TS 31.102 / 31.103 /
102 221 layouts); the card layer decodes with its own code in :mod:`ue_agent.card.ef`, so the
two sides still check each other's byte layouts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ue_agent.card import ef as catalogue
from ue_agent.subscriber import Subscriber

#: Full 16-byte AIDs (RID A000000087, app code 1002 / 1004, then our own tail).
USIM_AID = bytes.fromhex("a0000000871002ffffffff8907090000")
ISIM_AID = bytes.fromhex("a0000000871004ffffffff8907090000")

EF_DIR_RECORD_LEN = 0x26
GBABP_SIZE = 128
GBANL_RECORD_LEN = 160  # NAF_Id (FQDN + 5) and B-TID TLVs: 113 octets for the lab FQDNs
GBANL_RECORDS = 4


@dataclass
class Ef:
    """An elementary file: transparent (``records is None``) or linear fixed."""

    fid: int
    name: str
    data: bytearray = field(default_factory=bytearray)  # transparent body
    records: list[bytearray] | None = None  # linear fixed records, all ``record_len`` long
    record_len: int = 0
    sfi: int | None = None
    writable: bool = False  # UPDATE BINARY/RECORD allowed without further access conditions

    @property
    def linear(self) -> bool:
        return self.records is not None

    @property
    def size(self) -> int:
        return self.record_len * len(self.records) if self.records is not None else len(self.data)

    def fcp(self, sfi_supported: bool = True) -> bytes:
        """FCP template (TS 102 221 11.1.1.3); tag 88 holds the SFI, empty when there is none
        (an absent tag 88 would mean "the SFI is the low five bits of the FID")."""
        if self.records is not None:
            desc = bytes([0x42, 0x21, 0x00, self.record_len, len(self.records)])
        else:
            desc = bytes([0x41, 0x21])
        body = tlv(0x82, desc) + tlv(0x83, self.fid.to_bytes(2, "big")) + tlv(0x8A, b"\x05")
        body += tlv(0x8B, bytes.fromhex("6f0601")) + tlv(0x80, self.size.to_bytes(2, "big"))
        sfi = self.sfi if sfi_supported else None
        body += tlv(0x88, bytes([sfi << 3]) if sfi is not None else b"")
        return tlv(0x62, body)


@dataclass
class Df:
    """The MF or an ADF: a directory of EFs (and, for the MF, of ADFs)."""

    fid: int
    name: str
    files: dict[int, Ef] = field(default_factory=dict)
    aid: bytes | None = None  # ADFs only

    def add(self, *efs: Ef) -> Df:
        for ef in efs:
            self.files[ef.fid] = ef
        return self

    def by_sfi(self, sfi: int) -> Ef | None:
        return next((ef for ef in self.files.values() if ef.sfi == sfi), None)

    def fcp(self) -> bytes:
        body = tlv(0x82, b"\x78\x21") + tlv(0x83, self.fid.to_bytes(2, "big"))
        if self.aid is not None:
            body += tlv(0x84, self.aid)
        body += tlv(0x8A, b"\x05") + tlv(0xC6, bytes.fromhex("90017083010183018183010a"))
        return tlv(0x62, body)


def _ef(app: str, name: str, data: bytes | bytearray | None = None, **kw: Any) -> Ef:
    """The catalogue's ``name`` in ``app`` as a soft-UICC EF holding ``data`` (or ``records=``)."""
    spec = catalogue.spec(app, name)
    if spec.linear != ("records" in kw):
        raise ValueError(f"{app}/{name}: catalogue structure is {'linear' if spec.linear else 'transparent'}")
    if spec.size is not None and data is not None and len(data) != spec.size:
        raise ValueError(f"{app}/{name}: {len(data)} octets, the catalogue says {spec.size}")
    body = bytearray(data) if data is not None else bytearray()
    return Ef(spec.fid, spec.name, body, sfi=spec.sfi, **kw)


# --- encoders --------------------------------------------------------------------------
def tlv(tag: int, value: bytes) -> bytes:
    if len(value) > 0xFF:
        raise ValueError("TLV value too long for this card model")
    if len(value) < 0x80:
        return bytes([tag, len(value)]) + value
    return bytes([tag, 0x81, len(value)]) + value


def pad(data: bytes, size: int) -> bytearray:
    if len(data) > size:
        raise ValueError(f"{len(data)} bytes do not fit in {size}")
    return bytearray(data + b"\xff" * (size - len(data)))


def swapped_bcd(digits: str) -> bytes:
    if len(digits) % 2:
        digits += "f"
    return bytes(int(digits[i + 1] + digits[i], 16) for i in range(0, len(digits), 2))


def encode_imsi(imsi: str) -> bytes:
    """EF_IMSI: length byte, then parity nibble + digits, swapped BCD (TS 31.102 4.2.2)."""
    nibbles = ("9" if len(imsi) % 2 else "1") + imsi
    if len(nibbles) % 2:
        nibbles += "f"
    body = bytes(int(nibbles[i + 1] + nibbles[i], 16) for i in range(0, len(nibbles), 2))
    return bytes([len(body)]) + body


def encode_pcscf(addr: str) -> bytes:
    """EF_P-CSCF record body: 80 L type address (00 FQDN, 01 IPv4, 02 IPv6)."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return tlv(0x80, b"\x00" + addr.encode())
    return tlv(0x80, (b"\x01" if ip.version == 4 else b"\x02") + ip.packed)


def service_table(services: set[int], size: int) -> bytes:
    out = bytearray(size)
    for n in services:
        out[(n - 1) // 8] |= 1 << ((n - 1) % 8)
    return bytes(out)


def ef_dir_record(aid: bytes, label: str) -> bytearray:
    body = tlv(0x4F, aid) + tlv(0x50, label.encode())
    return pad(tlv(0x61, body), EF_DIR_RECORD_LEN)


def _records(bodies: list[bytes], minimum: int = 1, spare: int = 1) -> tuple[list[bytearray], int]:
    rlen = max([len(b) for b in bodies] + [16])
    count = max(len(bodies) + spare, minimum)
    recs = [pad(b, rlen) for b in bodies] + [pad(b"", rlen) for _ in range(count - len(bodies))]
    return recs, rlen


# --- the applications ------------------------------------------------------------------
#: USIM services offered: 27 GSM access (Kc in the 3G context answer), 33 (packet switched).
UST_SERVICES = {27, 33}


def usim_adf(sub: Subscriber) -> Df:
    adf = Df(0x7FF0, "ADF.USIM", aid=USIM_AID)
    return adf.add(
        _ef("USIM", "EF_IMSI", pad(encode_imsi(sub.imsi), catalogue.IMSI_SIZE)),
        _ef("USIM", "EF_AD", bytes([0x00, 0x00, 0x00, sub.mnc_length])),
        _ef("USIM", "EF_UST", service_table(UST_SERVICES, 8)),
    )


def isim_services(sub: Subscriber) -> set[int]:
    """1 P-CSCF address, 3 HTTP Digest; 2 GBA only when the subscriber file says gba_u."""
    return {1, 3} | ({2} if sub.gba_u else set())


def isim_adf(sub: Subscriber) -> Df:
    adf = Df(0x7FF1, "ADF.ISIM", aid=ISIM_AID)
    impu, impu_len = _records([tlv(0x80, u.encode()) for u in sub.impu])
    pcscf, pcscf_len = _records([encode_pcscf(a) for a in sub.pcscf])
    gbanl = [pad(b"", GBANL_RECORD_LEN) for _ in range(GBANL_RECORDS)]
    return adf.add(
        _ef("ISIM", "EF_IMPI", tlv(0x80, sub.impi.encode())),
        _ef("ISIM", "EF_DOMAIN", tlv(0x80, sub.domain.encode())),
        _ef("ISIM", "EF_IMPU", records=impu, record_len=impu_len),
        _ef("ISIM", "EF_IST", service_table(isim_services(sub), 2)),
        _ef("ISIM", "EF_P-CSCF", records=pcscf, record_len=pcscf_len),
        _ef("ISIM", "EF_AD", bytes([0x00, 0x00, 0x00, sub.mnc_length])),
        _ef("ISIM", "EF_GBABP", pad(b"", GBABP_SIZE), writable=True),
        _ef("ISIM", "EF_GBANL", records=gbanl, record_len=GBANL_RECORD_LEN),
    )


def build_mf(sub: Subscriber) -> tuple[Df, list[Df]]:
    """The MF and the ADFs listed in its EF_DIR (USIM first, then ISIM when present)."""
    adfs = [usim_adf(sub)] + ([isim_adf(sub)] if sub.isim else [])
    labels = {USIM_AID: "USIM", ISIM_AID: "ISIM"}
    dir_records = [ef_dir_record(a.aid or b"", labels[a.aid or b""]) for a in adfs]
    iccid = swapped_bcd(sub.iccid)[: catalogue.ICCID_SIZE].ljust(catalogue.ICCID_SIZE, b"\xff")
    mf = Df(catalogue.FID_MF, "MF").add(
        _ef(
            "MF", "EF_DIR", records=dir_records + [pad(b"", EF_DIR_RECORD_LEN)], record_len=EF_DIR_RECORD_LEN
        ),
        _ef("MF", "EF_ICCID", iccid),
    )
    return mf, adfs


def catalogue_gaps(mf: Df, adfs: list[Df]) -> list[str]:
    """Catalogue entries the built file system lacks or holds differently (empty: none)."""
    dirs = {"MF": mf} | {("USIM" if a.aid == USIM_AID else "ISIM"): a for a in adfs}
    gaps = []
    for spec in catalogue.CATALOGUE:
        df = dirs.get(spec.app)
        if df is None:
            continue
        ef = df.files.get(spec.fid)
        if ef is None or ef.sfi != spec.sfi or ef.linear != spec.linear or ef.name != spec.name:
            gaps.append(f"{spec.app}/{spec.name}")
    return gaps
