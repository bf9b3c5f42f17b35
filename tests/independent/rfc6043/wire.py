"""Byte-level encoding and STRICT decoding of MIKEY / MIKEY-TICKET payloads.

Every length is checked against what is left, every chain must end with Next Payload = 0 exactly at the end of
its enclosing field, every code point is checked against the registry of the clause that defines the field.
The message-level rules (which payloads, in which order, how many) are in messages.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .algs import ENC_ALGS, mac_len
from .errors import (
    ERR_INVALID_DT,
    ERR_INVALID_EA,
    ERR_INVALID_ID,
    ERR_INVALID_PRF,
    ERR_INVALID_SP,
    ERR_INVALID_SPPAR,
    ERR_INVALID_TICKET,
    ERR_INVALID_TPPAR,
    ERR_INVALID_TS,
    ERR_UNSUPPORTED_MESSAGE,
    reject,
)

# Next Payload values: RFC 3830 6.1 Table 6.1.b, RFC 6043 6.1 Table 6.2.
NP_LAST = 0
NP_KEMAC = 1
NP_PKE = 2
NP_DH = 3
NP_SIGN = 4
NP_T = 5
NP_ID = 6
NP_CERT = 7
NP_CHASH = 8
NP_V = 9
NP_SP = 10
NP_RAND = 11
NP_ERR = 12
NP_TR = 13
NP_IDR = 14
NP_RANDR = 15
NP_TP = 16
NP_TICKET = 17
NP_KEYDATA = 20
NP_GENEXT = 21
PAYLOAD_NAMES = {
    NP_KEMAC: "KEMAC",
    NP_PKE: "PKE",
    NP_DH: "DH",
    NP_SIGN: "SIGN",
    NP_T: "T",
    NP_ID: "ID",
    NP_CERT: "CERT",
    NP_CHASH: "CHASH",
    NP_V: "V",
    NP_SP: "SP",
    NP_RAND: "RAND",
    NP_ERR: "ERR",
    NP_TR: "TR",
    NP_IDR: "IDR",
    NP_RANDR: "RANDR",
    NP_TP: "TP",
    NP_TICKET: "TICKET",
    NP_KEYDATA: "Key data",
    NP_GENEXT: "General Ext.",
    22: "IBAKE",
    23: "ESK",
    24: "SK",
    25: "ECCPT",
    26: "SAKKE",
}

# Data types: RFC 3830 6.1 Table 6.1.a, RFC 6043 6.1 Table 6.1.
DT_ERROR = 6
DT_REQUEST_INIT_PSK = 11
DT_REQUEST_INIT_PK = 12
DT_REQUEST_RESP = 13
DT_TRANSFER_INIT = 14
DT_TRANSFER_RESP = 15
DT_RESOLVE_INIT_PSK = 16
DT_RESOLVE_INIT_PK = 17
DT_RESOLVE_RESP = 18
DATA_TYPE_NAMES = {
    DT_ERROR: "Error",
    DT_REQUEST_INIT_PSK: "REQUEST_INIT_PSK",
    DT_REQUEST_INIT_PK: "REQUEST_INIT_PK",
    DT_REQUEST_RESP: "REQUEST_RESP",
    DT_TRANSFER_INIT: "TRANSFER_INIT",
    DT_TRANSFER_RESP: "TRANSFER_RESP",
    DT_RESOLVE_INIT_PSK: "RESOLVE_INIT_PSK",
    DT_RESOLVE_INIT_PK: "RESOLVE_INIT_PK",
    DT_RESOLVE_RESP: "RESOLVE_RESP",
}

# CS ID map types: RFC 3830 6.1 (SRTP-ID 0), RFC 4563 5 (Empty map 1), RFC 6043 6.1 (GENERIC-ID 2).
MAP_SRTP_ID = 0
MAP_EMPTY = 1
MAP_GENERIC_ID = 2

# Roles (RFC 6043 6.4 Table 6.9, 6.6 Table 6.11, 6.8 Table 6.13; IANA adds ID Roles 6-9).
TR_ISSUE, TR_START, TR_END, TR_REKEY = 1, 2, 3, 4
IDR_I, IDR_R, IDR_KMS, IDR_PSK, IDR_APP = 1, 2, 3, 4, 5
RANDR_I, RANDR_R, RANDR_KMS = 1, 2, 3
ROLE_NAMES_IDR = {
    1: "IDRi",
    2: "IDRr",
    3: "IDRkms",
    4: "IDRpsk",
    5: "IDRapp",
    6: "IDRkmsi",
    7: "IDRkmsr",
    8: "IDRuidi",
    9: "IDRuidr",
}
ROLE_NAMES_RANDR = {1: "RANDRi", 2: "RANDRr", 3: "RANDRkms"}
ROLE_NAMES_TR = {1: "TRi", 2: "TRs", 3: "TRe", 4: "TRr"}

# Key data types: RFC 3830 6.13 Table 6.13.a, RFC 6043 6.2.1 Table 6.7.
KD_TGK, KD_TGK_SALT, KD_TEK, KD_TEK_SALT, KD_GTGK, KD_GTGK_SALT, KD_MPK = 0, 1, 2, 3, 4, 5, 6
KEY_TYPE_NAMES = {0: "TGK", 1: "TGK+SALT", 2: "TEK", 3: "TEK+SALT", 4: "GTGK", 5: "GTGK+SALT", 6: "MPK"}
KV_NULL, KV_SPI, KV_INTERVAL = 0, 1, 2

TS_LEN = {0: 8, 1: 8, 2: 4, 3: 4}  # RFC 3830 6.6 Table 6.6, RFC 6043 6.3 Table 6.8

PROT_SRTP = 0
PROT_TESLA = 1


def _private(v: int) -> bool:
    return 241 <= v <= 255


def _u16(v: int) -> bytes:
    return v.to_bytes(2, "big")


class _Reader:
    def __init__(self, buf: bytes, base: int, what: str, clause: str) -> None:
        self.buf = buf
        self.pos = 0
        self.base = base
        self.what = what
        self.clause = clause

    @property
    def abs(self) -> int:
        return self.base + self.pos

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, field_name: str) -> bytes:
        if n > self.left():
            raise reject(
                "rfc6043.truncated",
                self.clause,
                f"{self.what}: {field_name} needs {n} bytes, {self.left()} left",
                offset=self.abs,
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, f: str) -> int:
        return self.take(1, f)[0]

    def u16(self, f: str) -> int:
        return int.from_bytes(self.take(2, f), "big")

    def u32(self, f: str) -> int:
        return int.from_bytes(self.take(4, f), "big")


# ------------------------------------------------------------------------------------------------ payloads


@dataclass(frozen=True)
class Payload:
    TYPE: ClassVar[int] = -1
    NAME: ClassVar[str] = "?"
    offset: int = field(default=-1, compare=False, repr=False, kw_only=True)

    def body(self) -> bytes:  # everything after the Next Payload byte
        raise NotImplementedError


@dataclass(frozen=True)
class T(Payload):
    """Timestamp payload, RFC 3830 6.6 (+ NTP-UTC-32, RFC 6043 6.3)."""

    TYPE: ClassVar[int] = NP_T
    NAME: ClassVar[str] = "T"
    ts_type: int
    value: bytes

    def body(self) -> bytes:
        return bytes([self.ts_type]) + self.value


@dataclass(frozen=True)
class TR(Payload):
    """Timestamp payload with role indicator, RFC 6043 6.4."""

    TYPE: ClassVar[int] = NP_TR
    NAME: ClassVar[str] = "TR"
    role: int
    ts_type: int
    value: bytes

    def body(self) -> bytes:
        return bytes([self.role, self.ts_type]) + self.value


@dataclass(frozen=True)
class Rand(Payload):
    """RAND payload, RFC 3830 6.11."""

    TYPE: ClassVar[int] = NP_RAND
    NAME: ClassVar[str] = "RAND"
    rand: bytes

    def body(self) -> bytes:
        return bytes([len(self.rand)]) + self.rand


@dataclass(frozen=True)
class RandR(Payload):
    """RAND payload with role indicator, RFC 6043 6.8."""

    TYPE: ClassVar[int] = NP_RANDR
    NAME: ClassVar[str] = "RANDR"
    role: int
    rand: bytes

    def body(self) -> bytes:
        return bytes([self.role, len(self.rand)]) + self.rand


@dataclass(frozen=True)
class IDR(Payload):
    """ID payload with role indicator, RFC 6043 6.6."""

    TYPE: ClassVar[int] = NP_IDR
    NAME: ClassVar[str] = "IDR"
    role: int
    id_type: int
    data: bytes

    def body(self) -> bytes:
        return bytes([self.role, self.id_type]) + _u16(len(self.data)) + self.data


@dataclass(frozen=True)
class V(Payload):
    """Verification payload, RFC 3830 6.9 (the Ver data length follows from the Auth alg)."""

    TYPE: ClassVar[int] = NP_V
    NAME: ClassVar[str] = "V"
    mac_alg: int
    mac: bytes

    def body(self) -> bytes:
        return bytes([self.mac_alg]) + self.mac


@dataclass(frozen=True)
class Err(Payload):
    """Error payload, RFC 3830 6.12 (+ Error no 14, 15 of RFC 6043 6.9)."""

    TYPE: ClassVar[int] = NP_ERR
    NAME: ClassVar[str] = "ERR"
    error_no: int
    reserved: int = 0

    def body(self) -> bytes:
        return bytes([self.error_no]) + _u16(self.reserved)


@dataclass(frozen=True)
class SP(Payload):
    """Security Policy payload, RFC 3830 6.10; params is a tuple of (Type, Value)."""

    TYPE: ClassVar[int] = NP_SP
    NAME: ClassVar[str] = "SP"
    policy_no: int
    prot_type: int
    params: tuple[tuple[int, bytes], ...]

    def body(self) -> bytes:
        p = b"".join(bytes([t, len(v)]) + v for t, v in self.params)
        return bytes([self.policy_no, self.prot_type]) + _u16(len(p)) + p

    def param(self, ptype: int) -> bytes | None:
        for t, v in self.params:
            if t == ptype:
                return v
        return None


@dataclass(frozen=True)
class Kemac(Payload):
    """Key data transport payload, RFC 3830 6.2 (+ AES-CM-256, HMAC-SHA-256-256 of RFC 6043 6.2)."""

    TYPE: ClassVar[int] = NP_KEMAC
    NAME: ClassVar[str] = "KEMAC"
    encr_alg: int
    encr_data: bytes
    mac_alg: int
    mac: bytes

    def body(self) -> bytes:
        return (
            bytes([self.encr_alg])
            + _u16(len(self.encr_data))
            + self.encr_data
            + bytes([self.mac_alg])
            + self.mac
        )


@dataclass(frozen=True)
class GenExt(Payload):
    """General Extension payload, RFC 3830 6.15; type 3 = Key ID (RFC 4563 4)."""

    TYPE: ClassVar[int] = NP_GENEXT
    NAME: ClassVar[str] = "General Ext."
    ext_type: int
    data: bytes

    def body(self) -> bytes:
        return bytes([self.ext_type]) + _u16(len(self.data)) + self.data

    def key_ids(self) -> tuple[tuple[int, bytes], ...]:
        """Key ID Type sub-payloads (RFC 4563 4) of a type 3 extension, already validated at decode."""
        out = []
        r = _Reader(self.data, self.offset + 4, "Key ID information", "RFC 4563 4")
        while r.left():
            t = r.u8("Key ID Type")
            out.append((t, r.take(r.u8("Key ID Length"), "Key ID")))
        return tuple(out)


@dataclass(frozen=True)
class Thdr(Payload):
    """Ticket Header payload, RFC 6043 A.3 (first payload of base Ticket Data; has no Next Payload code)."""

    TYPE: ClassVar[int] = -2
    NAME: ClassVar[str] = "THDR"
    data: bytes

    def body(self) -> bytes:
        return _u16(len(self.data)) + self.data


@dataclass(frozen=True)
class Flags:
    """The D..O flags of TP / TICKET (RFC 6043 6.10)."""

    D: bool = False
    E: bool = False
    F: bool = False
    G: bool = False
    H: bool = False
    I: bool = False  # noqa: E741 -- the flag is called I in the text
    J: bool = False
    K: bool = False
    L: bool = False
    M: bool = False
    N: bool = False
    O: bool = False  # noqa: E741

    NAMES: ClassVar[str] = "DEFGHIJKLMNO"

    def bits(self) -> int:  # 12 bits, D is the most significant
        v = 0
        for n in self.NAMES:
            v = (v << 1) | int(getattr(self, n))
        return v

    @classmethod
    def from_bits(cls, v: int) -> Flags:
        vals = {n: bool((v >> (11 - i)) & 1) for i, n in enumerate(cls.NAMES)}
        return cls(**vals)

    def __str__(self) -> str:
        return "".join(n if getattr(self, n) else "-" for n in self.NAMES)


@dataclass(frozen=True)
class PolicyHead:
    ticket_type: int
    subtype: int
    version: int
    prf_func: int
    flags: Flags
    res: int = 0

    def encode(self) -> bytes:
        # Version(8) | PRF Func(7) | D..O (12) | Res(5)
        word = (self.prf_func << 17) | (self.flags.bits() << 5) | self.res
        return _u16(self.ticket_type) + bytes([self.subtype, self.version]) + word.to_bytes(3, "big")


@dataclass(frozen=True)
class TP(Payload):
    """Ticket Policy payload, RFC 6043 6.10. tp_data is First Payload byte + payload chain."""

    TYPE: ClassVar[int] = NP_TP
    NAME: ClassVar[str] = "TP"
    head: PolicyHead
    tp_data: bytes
    tp_payloads: tuple[Payload, ...] = field(default=(), compare=False)

    def body(self) -> bytes:
        return self.head.encode() + _u16(len(self.tp_data)) + self.tp_data


@dataclass(frozen=True)
class Ticket(Payload):
    """Ticket payload, RFC 6043 6.10."""

    TYPE: ClassVar[int] = NP_TICKET
    NAME: ClassVar[str] = "TICKET"
    head: PolicyHead
    tp_data: bytes
    ticket_data: bytes
    initiator_data: bytes = b""
    tp_payloads: tuple[Payload, ...] = field(default=(), compare=False)
    initiator_payloads: tuple[Payload, ...] = field(default=(), compare=False)

    def body(self) -> bytes:
        return (
            self.head.encode()
            + _u16(len(self.tp_data))
            + self.tp_data
            + _u16(len(self.ticket_data))
            + self.ticket_data
            + _u16(len(self.initiator_data))
            + self.initiator_data
        )

    def without_initiator_data(self) -> Ticket:
        return Ticket(self.head, self.tp_data, self.ticket_data, b"", self.tp_payloads, ())


@dataclass(frozen=True)
class KeyData(Payload):
    """Key data sub-payload, RFC 3830 6.13 / 6.14 (+ GTGK, MPK of RFC 6043 6.2.1)."""

    TYPE: ClassVar[int] = NP_KEYDATA
    NAME: ClassVar[str] = "Key data"
    key_type: int
    key: bytes
    salt: bytes | None = None
    kv_type: int = KV_SPI
    spi: bytes = b""
    valid_from: bytes = b""
    valid_to: bytes = b""

    def body(self) -> bytes:
        out = bytes([(self.key_type << 4) | self.kv_type]) + _u16(len(self.key)) + self.key
        if self.key_type in (KD_TGK_SALT, KD_TEK_SALT, KD_GTGK_SALT):
            salt = self.salt or b""
            out += _u16(len(salt)) + salt
        if self.kv_type == KV_SPI:
            out += bytes([len(self.spi)]) + self.spi
        elif self.kv_type == KV_INTERVAL:
            out += (
                bytes([len(self.valid_from)]) + self.valid_from + bytes([len(self.valid_to)]) + self.valid_to
            )
        return out

    def __repr__(self) -> str:  # never show key material
        return (
            f"KeyData({KEY_TYPE_NAMES.get(self.key_type, self.key_type)}, {len(self.key)} bytes, "
            f"salt={len(self.salt or b'')} bytes, kv={self.kv_type}, spi={self.spi.hex()})"
        )


# ------------------------------------------------------------------------------------------------ header


@dataclass(frozen=True)
class SrtpIdCs:
    """One SRTP-ID map entry, RFC 3830 6.1.1."""

    policy_no: int
    ssrc: int
    roc: int

    def encode(self) -> bytes:
        return bytes([self.policy_no]) + self.ssrc.to_bytes(4, "big") + self.roc.to_bytes(4, "big")


@dataclass(frozen=True)
class GenericCs:
    """One GENERIC-ID map block, RFC 6043 6.1.1."""

    cs_id: int
    prot_type: int
    s_flag: bool
    policies: tuple[int, ...]
    session_data: bytes
    spi: bytes

    def encode(self) -> bytes:
        return (
            bytes([self.cs_id, self.prot_type, (int(self.s_flag) << 7) | len(self.policies)])
            + bytes(self.policies)
            + _u16(len(self.session_data))
            + self.session_data
            + bytes([len(self.spi)])
            + self.spi
        )

    @property
    def ssrc(self) -> int | None:
        return int.from_bytes(self.session_data[:4], "big") if len(self.session_data) >= 4 else None

    @property
    def roc(self) -> int | None:
        return int.from_bytes(self.session_data[4:8], "big") if len(self.session_data) == 10 else None

    @property
    def seq(self) -> int | None:
        return int.from_bytes(self.session_data[8:10], "big") if len(self.session_data) == 10 else None


CsEntry = SrtpIdCs | GenericCs


@dataclass(frozen=True)
class Header:
    """Common Header payload, RFC 3830 6.1 + RFC 6043 6.1."""

    data_type: int
    csb_id: int
    prf_func: int = 1
    v_flag: bool = False
    map_type: int = MAP_EMPTY
    cs_map: tuple[CsEntry, ...] = ()
    version: int = 1

    def encode(self, next_payload: int) -> bytes:
        info = b"".join(cs.encode() for cs in self.cs_map)
        return (
            bytes([self.version, self.data_type, next_payload, (int(self.v_flag) << 7) | self.prf_func])
            + self.csb_id.to_bytes(4, "big")
            + bytes([len(self.cs_map), self.map_type])
            + info
        )


# ------------------------------------------------------------------------------------------------ decoding


def _dec_header(buf: bytes) -> tuple[Header, int, int]:
    c = "RFC 3830 6.1 / RFC 6043 6.1"
    r = _Reader(buf, 0, "HDR", c)
    version = r.u8("version")
    if version != 1:
        raise reject(
            "rfc6043.hdr.version", "RFC 3830 6.1", f"version {version}, only 0x01 is defined", offset=0
        )
    dt = r.u8("data type")
    if dt in (DT_REQUEST_INIT_PK, DT_RESOLVE_INIT_PK):
        raise reject(
            "rfc6043.hdr.pk_variant",
            "RFC 6043 4.2.1.3 / 4.2.3.3",
            f"data type {dt} ({DATA_TYPE_NAMES[dt]}): the PK variants are outside this implementation",
            err_no=ERR_UNSUPPORTED_MESSAGE,
            offset=1,
        )
    if dt not in DATA_TYPE_NAMES:
        raise reject(
            "rfc6043.hdr.data_type",
            "RFC 3830 6.1 Table 6.1.a / RFC 6043 6.1 Table 6.1",
            f"data type {dt} is not a MIKEY-TICKET message or Error",
            err_no=ERR_INVALID_DT,
            offset=1,
        )
    nxt = r.u8("next payload")
    vp = r.u8("V/PRF func")
    v_flag, prf_func = bool(vp >> 7), vp & 0x7F
    if prf_func not in (0, 1):
        raise reject(
            "rfc6043.hdr.prf",
            "RFC 3830 6.1 Table 6.1.c / RFC 6043 6.1 Table 6.3",
            f"PRF func {prf_func} is not assigned",
            err_no=ERR_INVALID_PRF,
            offset=3,
        )
    csb_id = r.u32("CSB ID")
    ncs = r.u8("#CS")
    map_type = r.u8("CS ID map type")
    entries: list[CsEntry] = []
    if map_type == MAP_SRTP_ID:
        for _ in range(ncs):
            entries.append(SrtpIdCs(r.u8("Policy_no"), r.u32("SSRC"), r.u32("ROC")))
    elif map_type == MAP_EMPTY:
        if ncs:
            raise reject("rfc6043.hdr.empty_map_cs", "RFC 4563 5", f"Empty map with #CS = {ncs}", offset=8)
    elif map_type == MAP_GENERIC_ID:
        cg = "RFC 6043 6.1.1"
        r.clause = cg
        for _ in range(ncs):
            at = r.abs
            cs_id = r.u8("CS ID")
            prot = r.u8("Prot type")
            if prot not in (PROT_SRTP, PROT_TESLA) and not _private(prot):
                raise reject(
                    "rfc6043.generic_id.prot_type",
                    "RFC 6043 6.1.1 / RFC 3830 6.10 Table 6.10",
                    f"CS {cs_id}: Prot type {prot} is unassigned",
                    err_no=ERR_INVALID_SP,
                    offset=at + 1,
                )
            sp = r.u8("S/#P")
            pols = tuple(r.take(sp & 0x7F, "Ps"))
            sdl = r.u16("Session Data Length")
            sd = r.take(sdl, "Session Data")
            s_flag = bool(sp >> 7)
            if prot == PROT_SRTP:
                want = (10,) if s_flag else (0, 4)
                if sdl not in want:
                    raise reject(
                        "rfc6043.generic_id.session_data",
                        cg,
                        f"CS {cs_id}: SRTP Session Data of {sdl} bytes with S={int(s_flag)}; "
                        f"allowed {want} (SSRC, and ROC+SEQ iff S=1)",
                        offset=at,
                    )
            spi = r.take(r.u8("SPI Length"), "SPI")
            entries.append(GenericCs(cs_id, prot, s_flag, pols, sd, spi))
        ids = [e.cs_id for e in entries if isinstance(e, GenericCs)]
        if len(set(ids)) != len(ids):
            raise reject("rfc6043.generic_id.dup_cs", cg, f"CS IDs {ids} are not distinct", offset=10)
    else:
        raise reject(
            "rfc6043.hdr.map_type",
            "RFC 3830 6.1 / RFC 4563 5 / RFC 6043 6.1 Table 6.4",
            f"CS ID map type {map_type} is not SRTP-ID, Empty map or GENERIC-ID",
            offset=9,
        )
    hdr = Header(dt, csb_id, prf_func, v_flag, map_type, tuple(entries), version)
    return hdr, nxt, r.pos


def _check_ts(ts_type: int, r: _Reader, what: str, clause: str) -> bytes:
    if ts_type not in TS_LEN:
        raise reject(
            "rfc6043.t.type",
            clause,
            f"{what}: TS type {ts_type} is not assigned",
            err_no=ERR_INVALID_TS,
            offset=r.abs - 1,
        )
    return r.take(TS_LEN[ts_type], "TS value")


def _dec_payload(ptype: int, r: _Reader, ctx: str) -> Payload:
    at = r.abs - 1
    name = PAYLOAD_NAMES.get(ptype, str(ptype))
    if ptype == NP_T:
        r.clause = "RFC 3830 6.6 / RFC 6043 6.3"
        ts = r.u8("TS type")
        return T(ts, _check_ts(ts, r, "T", r.clause), offset=at)
    if ptype == NP_TR:
        r.clause = "RFC 6043 6.4"
        role = r.u8("TS Role")
        if role not in ROLE_NAMES_TR and not 240 <= role <= 254:
            raise reject(
                "rfc6043.tr.role",
                "RFC 6043 6.4 Table 6.9 / 14",
                f"TS Role {role} is not assigned",
                offset=at + 1,
            )
        ts = r.u8("TS type")
        return TR(role, ts, _check_ts(ts, r, "TR", r.clause), offset=at)
    if ptype == NP_RAND:
        r.clause = "RFC 3830 6.11"
        n = r.u8("RAND len")
        return Rand(r.take(n, "RAND"), offset=at)
    if ptype == NP_RANDR:
        r.clause = "RFC 6043 6.8"
        role = r.u8("RAND Role")
        if role not in ROLE_NAMES_RANDR and not 240 <= role <= 254:
            raise reject(
                "rfc6043.randr.role",
                "RFC 6043 6.8 Table 6.13 / 14",
                f"RAND Role {role} is not assigned",
                offset=at + 1,
            )
        n = r.u8("RAND length")
        return RandR(role, r.take(n, "RAND"), offset=at)
    if ptype == NP_IDR:
        r.clause = "RFC 6043 6.6"
        role = r.u8("ID Role")
        if role not in ROLE_NAMES_IDR and not 240 <= role <= 254:
            raise reject(
                "rfc6043.idr.role",
                "RFC 6043 6.6 Table 6.11 / 14",
                f"ID Role {role} is not assigned",
                err_no=ERR_INVALID_ID,
                offset=at + 1,
            )
        id_type = r.u8("ID Type")
        if id_type not in (0, 1, 2) and not _private(id_type):
            raise reject(
                "rfc6043.idr.id_type",
                "RFC 3830 6.7 Table 6.7.a / RFC 6043 6.5 Table 6.10",
                f"ID Type {id_type} is not NAI, URI or byte string",
                err_no=ERR_INVALID_ID,
                offset=at + 2,
            )
        n = r.u16("ID len")
        return IDR(role, id_type, r.take(n, "ID Data"), offset=at)
    if ptype == NP_V:
        r.clause = "RFC 3830 6.9"
        alg = r.u8("Auth alg")
        return V(alg, r.take(mac_len(alg, clause="RFC 3830 6.9 / 6.2", offset=at + 1), "Ver data"), offset=at)
    if ptype == NP_ERR:
        r.clause = "RFC 3830 6.12"
        no = r.u8("Error no")
        if not (0 <= no <= 15 or _private(no)):
            raise reject(
                "rfc6043.err.no",
                "RFC 3830 6.12 / RFC 6043 6.9 Table 6.14",
                f"Error no {no} is not assigned",
                offset=at + 1,
            )
        return Err(no, r.u16("Reserved"), offset=at)
    if ptype == NP_SP:
        return _dec_sp(r, at)
    if ptype == NP_KEMAC:
        r.clause = "RFC 3830 6.2 / RFC 6043 6.2"
        alg = r.u8("Encr alg")
        if alg not in ENC_ALGS and not _private(alg):
            raise reject(
                "rfc6043.kemac.encr_alg",
                "RFC 3830 6.2 Table 6.2.a / RFC 6043 6.2 Table 6.5",
                f"Encr alg {alg} is not assigned",
                err_no=ERR_INVALID_EA,
                offset=at + 1,
            )
        n = r.u16("Encr data len")
        data = r.take(n, "Encr data")
        malg = r.u8("MAC alg")
        return Kemac(
            alg, data, malg, r.take(mac_len(malg, clause=r.clause, offset=r.abs - 1), "MAC"), offset=at
        )
    if ptype == NP_GENEXT:
        r.clause = "RFC 3830 6.15"
        et = r.u8("Type")
        if not (0 <= et <= 7 or _private(et)):
            raise reject(
                "rfc6043.genext.type",
                "RFC 3830 6.15 / IANA General Extensions Type",
                f"General Extension type {et} is not assigned",
                offset=at + 1,
            )
        n = r.u16("Length")
        data = r.take(n, "Data")
        g = GenExt(et, data, offset=at)
        if et == 3:
            kr = _Reader(data, at + 4, "Key ID information", "RFC 4563 4")
            while kr.left():
                kt = kr.u8("Key ID Type")
                if not (0 <= kt <= 2 or _private(kt)):
                    raise reject(
                        "rfc6043.genext.key_id_type",
                        "RFC 4563 4 Table 2",
                        f"Key ID Type {kt}",
                        offset=kr.abs - 1,
                    )
                kr.take(kr.u8("Key ID Length"), "Key ID")
        return g
    if ptype in (NP_TP, NP_TICKET):
        return _dec_ticket_like(ptype, r, at)
    if ptype == NP_KEYDATA:
        return _dec_keydata(r, at)
    if ptype == NP_ID:
        raise reject(
            "rfc6043.payload.id",
            "RFC 6043 6.6",
            "ID payload (6): the IDR payload MUST be used instead of ID in all MIKEY-TICKET messages",
            err_no=ERR_INVALID_ID,
            offset=at,
        )
    if ptype in PAYLOAD_NAMES:
        raise reject(
            "rfc6043.payload.unexpected",
            "RFC 6043 4.2 / 5.4",
            f"{name} payload ({ptype}) is not part of the PSK variants of MIKEY-TICKET ({ctx})",
            offset=at,
        )
    raise reject(
        "rfc6043.payload.unknown",
        "RFC 3830 6.1 Table 6.1.b / RFC 6043 6.1 Table 6.2",
        f"Next Payload {ptype} is not assigned ({ctx})",
        offset=at,
    )


def _dec_sp(r: _Reader, at: int) -> SP:
    r.clause = "RFC 3830 6.10"
    no = r.u8("Policy no")
    prot = r.u8("Prot type")
    if prot not in (PROT_SRTP, PROT_TESLA) and not _private(prot):
        raise reject(
            "rfc6043.sp.prot_type",
            "RFC 3830 6.10 Table 6.10",
            f"Prot type {prot} is not assigned",
            err_no=ERR_INVALID_SP,
            offset=at + 2,
        )
    n = r.u16("Policy param length")
    pr = _Reader(r.take(n, "Policy param"), at + 5, "SP Policy param", "RFC 3830 6.10")
    params = []
    while pr.left():
        t = pr.u8("Type")
        v = pr.take(pr.u8("Length"), "Value")
        if prot == PROT_SRTP and not (t <= 20 or _private(t)):
            raise reject(
                "rfc6043.sp.param_type",
                "RFC 3830 6.10.1 / IANA MIKEY Security Protocol Parameters",
                f"SRTP policy param type {t} is not assigned",
                err_no=ERR_INVALID_SPPAR,
                offset=pr.abs - len(v) - 2,
            )
        params.append((t, v))
    return SP(no, prot, tuple(params), offset=at)


def _dec_keydata(r: _Reader, at: int) -> KeyData:
    r.clause = "RFC 3830 6.13 / RFC 6043 6.2.1"
    tk = r.u8("Type/KV")
    kt, kv = tk >> 4, tk & 0xF
    if kt not in KEY_TYPE_NAMES:
        raise reject(
            "rfc6043.keydata.type",
            "RFC 3830 6.13 Table 6.13.a / RFC 6043 6.2.1 Table 6.7",
            f"Key data Type {kt} is not a key type of MIKEY-TICKET",
            offset=at + 1,
        )
    if kv not in (KV_NULL, KV_SPI, KV_INTERVAL):
        raise reject(
            "rfc6043.keydata.kv", "RFC 3830 6.13 Table 6.13.b", f"KV {kv} is not assigned", offset=at + 1
        )
    key = r.take(r.u16("Key data len"), "Key data")
    salt = None
    if kt in (KD_TGK_SALT, KD_TEK_SALT, KD_GTGK_SALT):
        salt = r.take(r.u16("Salt len"), "Salt data")
    spi = vf = vt = b""
    r.clause = "RFC 3830 6.14"
    if kv == KV_SPI:
        spi = r.take(r.u8("SPI Length"), "SPI")
    elif kv == KV_INTERVAL:
        vf = r.take(r.u8("VF Length"), "Valid From")
        vt = r.take(r.u8("VT Length"), "Valid To")
    return KeyData(kt, key, salt, kv, spi, vf, vt, offset=at)


def _dec_ticket_like(ptype: int, r: _Reader, at: int) -> Payload:
    r.clause = "RFC 6043 6.10"
    tt = r.u16("Ticket Type")
    if tt in (0, 0xFFFF) or 3 <= tt <= 61439:
        raise reject(
            "rfc6043.ticket.type",
            "RFC 6043 6.10 Table 6.15 / 14",
            f"Ticket Type {tt} is reserved or unassigned",
            err_no=ERR_INVALID_TICKET,
            offset=at + 1,
        )
    sub = r.u8("Subtype")
    ver = r.u8("Version")
    word = int.from_bytes(r.take(3, "PRF Func/flags"), "big")
    prf_func = word >> 17
    if prf_func not in (0, 1):
        raise reject(
            "rfc6043.ticket.prf",
            "RFC 6043 6.10 / 6.1 Table 6.3",
            f"PRF Func {prf_func} is not assigned",
            err_no=ERR_INVALID_TPPAR,
            offset=at + 5,
        )
    head = PolicyHead(tt, sub, ver, prf_func, Flags.from_bits((word >> 5) & 0xFFF), word & 0x1F)
    tp_at = r.abs + 2
    tp_data = r.take(r.u16("TP Data length"), "TP Data")
    tp_payloads = decode_inner_chain(tp_data, tp_at, "TP Data", "RFC 6043 6.10")
    if ptype == NP_TP:
        return TP(head, tp_data, tp_payloads, offset=at)
    td = r.take(r.u16("Ticket Data length"), "Ticket Data")
    id_at = r.abs + 2
    idata = r.take(r.u16("Initiator Data length"), "Initiator Data")
    ipl = decode_inner_chain(idata, id_at, "Initiator Data", "RFC 6043 6.10") if idata else ()
    return Ticket(head, tp_data, td, idata, tp_payloads, ipl, offset=at)


def decode_chain(buf: bytes, start: int, first: int, base: int, ctx: str, clause: str) -> tuple[Payload, ...]:
    """Decode payloads from buf[start:] whose first type is `first` until Next Payload = 0 at the very end."""
    out: list[Payload] = []
    pos = start
    cur = first
    if cur == NP_LAST:
        if pos != len(buf):
            raise reject(
                "rfc6043.trailing",
                clause,
                f"{ctx}: {len(buf) - pos} bytes after the last payload",
                offset=base + pos,
            )
        return ()
    while True:
        if pos >= len(buf):
            raise reject(
                "rfc6043.truncated",
                clause,
                f"{ctx}: a {PAYLOAD_NAMES.get(cur, cur)} payload is announced but no bytes are left",
                offset=base + pos,
            )
        nxt = buf[pos]
        r = _Reader(buf[pos + 1 :], base + pos + 1, f"{ctx} {PAYLOAD_NAMES.get(cur, cur)}", clause)
        p = _dec_payload(cur, r, ctx)
        out.append(p)
        pos += 1 + r.pos
        if nxt == NP_LAST:
            if pos != len(buf):
                raise reject(
                    "rfc6043.trailing",
                    "RFC 3830 6.1 (Next payload = Last payload)",
                    f"{ctx}: {len(buf) - pos} bytes after the payload marked last",
                    offset=base + pos,
                )
            return tuple(out)
        cur = nxt


def decode_inner_chain(data: bytes, base: int, ctx: str, clause: str) -> tuple[Payload, ...]:
    """TP Data / Initiator Data: "The first 8 bits identify the first payload" then MIKEY payloads (6.10)."""
    if not data:
        raise reject(
            "rfc6043.truncated",
            clause,
            f"{ctx} is empty: its first 8 bits identify the first payload",
            offset=base,
        )
    return decode_chain(data, 1, data[0], base, ctx, clause)


def decode_ticket_data_chain(data: bytes, base: int) -> tuple[Payload, ...]:
    """Base Ticket Data (RFC 6043 A): starts with THDR (A.1, A.3); its Next Payload names the 2nd payload."""
    r = _Reader(data, base, "THDR", "RFC 6043 A.3")
    nxt = r.u8("Next Payload")
    thdr = Thdr(r.take(r.u16("THDR Data length"), "THDR Data"), offset=base)
    if nxt == NP_LAST:
        raise reject("rfc6043.ticket_data.short", "RFC 6043 A", "Ticket Data ends after THDR", offset=base)
    return (thdr, *decode_chain(data, r.pos, nxt, base, "Ticket Data", "RFC 6043 A"))


def decode_key_data(plain: bytes, base: int = 0) -> tuple[KeyData, ...]:
    """Decrypted KEMAC Encr data: Key data sub-payloads chained with Next Payload 20, the last one 0."""
    if not plain:
        return ()
    out: list[KeyData] = []
    pos = 0
    while True:
        nxt = plain[pos]
        r = _Reader(plain[pos + 1 :], base + pos + 1, "Key data", "RFC 3830 6.13")
        kd = _dec_keydata(r, base + pos)
        out.append(kd)
        pos += 1 + r.pos
        if nxt == NP_LAST:
            if pos != len(plain):
                raise reject(
                    "rfc6043.trailing",
                    "RFC 3830 6.2",
                    f"{len(plain) - pos} bytes after the last Key data",
                    offset=base + pos,
                )
            return tuple(out)
        if nxt != NP_KEYDATA:
            raise reject(
                "rfc6043.keydata.next",
                "RFC 3830 6.2 / 6.13",
                f"Key data followed by Next Payload {nxt}; only Key data (20) or Last (0)",
                offset=base + pos - 1 - r.pos,
            )
        if pos >= len(plain):
            raise reject(
                "rfc6043.truncated",
                "RFC 3830 6.2",
                "Key data announced but Encr data ends",
                offset=base + pos,
            )


def encode_chain(payloads: list[Payload] | tuple[Payload, ...]) -> tuple[int, bytes]:
    """(type of the first payload, bytes of the chain with each Next Payload field filled in)."""
    out = b""
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].TYPE if i + 1 < len(payloads) else NP_LAST
        out += bytes([nxt]) + p.body()
    return (payloads[0].TYPE if payloads else NP_LAST), out


def encode_inner_chain(payloads: list[Payload] | tuple[Payload, ...]) -> bytes:
    first, chain = encode_chain(payloads)
    return bytes([first]) + chain


def encode_key_data(keys: list[KeyData] | tuple[KeyData, ...]) -> bytes:
    return encode_chain(list(keys))[1]


def encode_ticket_data(thdr: Thdr, rest: list[Payload]) -> bytes:
    first, chain = encode_chain(rest)
    return bytes([first]) + thdr.body() + chain


@dataclass(frozen=True)
class Message:
    """A decoded message: header, payloads (in order) and the exact bytes."""

    header: Header
    payloads: tuple[Payload, ...]
    raw: bytes = field(repr=False)

    @property
    def name(self) -> str:
        return DATA_TYPE_NAMES.get(self.header.data_type, str(self.header.data_type))

    def all(self, cls: type[Payload], role: int | None = None) -> list[Payload]:
        return [
            p
            for p in self.payloads
            if isinstance(p, cls) and (role is None or getattr(p, "role", None) == role)
        ]

    def one(self, cls: type[Payload], role: int | None = None) -> Payload | None:
        found = self.all(cls, role)
        return found[0] if found else None


def decode_structure(buf: bytes) -> Message:
    """Header + payload chain, lengths and code points only (no message-level rules)."""
    if not isinstance(buf, bytes | bytearray):
        raise TypeError("a MIKEY message is bytes")
    buf = bytes(buf)
    hdr, first, pos = _dec_header(buf)
    if first == NP_LAST:
        raise reject("rfc6043.truncated", "RFC 3830 5.2", "message has a header and no payload", offset=2)
    payloads = decode_chain(buf, pos, first, 0, DATA_TYPE_NAMES[hdr.data_type], "RFC 3830 6")
    return Message(hdr, payloads, buf)


def encode_message(header: Header, payloads: list[Payload] | tuple[Payload, ...]) -> bytes:
    first, chain = encode_chain(payloads)
    return header.encode(first) + chain
