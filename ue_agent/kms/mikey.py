"""MIKEY (RFC 3830), the empty map (RFC 4563) and MIKEY-TICKET (RFC 6043) messages: a sans-IO codec.

A message is the common header (HDR) followed by a chain of payloads, each naming the type
of the next one. :class:`Message` holds the header and the payloads as small dataclasses;
``encode()`` rebuilds the chain and ``Message.decode()`` parses strictly: truncation, wrong
lengths, unknown payload types, trailing bytes, oversize fields and wrong versions raise
:class:`MikeyError` (``mikey.malformed`` / ``mikey.unsupported``), never an IndexError.
Reserved bits are kept, so ``decode(x).encode() == x`` for every message that decodes.

Every number here is from the RFC tables or the IANA "MIKEY Payload Name Spaces" registry;
the values this project takes from the private-use ranges are marked as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from ue_agent.errors import MikeyError
from ue_agent.secret import Secret

VERSION = 1
MAX_MESSAGE = 0xFFFF
MAX_ID = 1024  # identities (URIs, NAIs, byte strings)
MAX_DATA = 8192  # ticket data, TP data, KEMAC encr data

# Data types (RFC 3830 6.1 Table 6.1.a, RFC 6043 6.1 Table 6.1).
DT_PSK_INIT = 0
DT_PSK_RESP = 1
DT_ERROR = 6
DT_REQUEST_INIT_PSK = 11
DT_REQUEST_INIT_PK = 12
DT_REQUEST_RESP = 13
DT_TRANSFER_INIT = 14
DT_TRANSFER_RESP = 15
DT_RESOLVE_INIT_PSK = 16
DT_RESOLVE_INIT_PK = 17
DT_RESOLVE_RESP = 18
DATA_TYPES = {
    DT_PSK_INIT: "PSK_INIT",
    DT_PSK_RESP: "PSK_RESP",
    2: "PK_INIT",
    3: "PK_RESP",
    4: "DH_INIT",
    5: "DH_RESP",
    DT_ERROR: "ERROR",
    7: "DHHMAC_INIT",
    8: "DHHMAC_RESP",
    9: "RSA_R_I_MSG",
    10: "RSA_R_R_MSG",
    DT_REQUEST_INIT_PSK: "REQUEST_INIT_PSK",
    DT_REQUEST_INIT_PK: "REQUEST_INIT_PK",
    DT_REQUEST_RESP: "REQUEST_RESP",
    DT_TRANSFER_INIT: "TRANSFER_INIT",
    DT_TRANSFER_RESP: "TRANSFER_RESP",
    DT_RESOLVE_INIT_PSK: "RESOLVE_INIT_PSK",
    DT_RESOLVE_INIT_PK: "RESOLVE_INIT_PK",
    DT_RESOLVE_RESP: "RESOLVE_RESP",
}

# Next payload (RFC 3830 6.1 Table 6.1.c, RFC 6043 Table 6.2).
PT_LAST = 0
PT_KEMAC = 1
PT_T = 5
PT_ID = 6
PT_V = 9
PT_SP = 10
PT_RAND = 11
PT_ERR = 12
PT_TR = 13
PT_IDR = 14
PT_RANDR = 15
PT_TP = 16
PT_TICKET = 17
PT_KEY_DATA = 20
PT_GENERAL_EXT = 21

# PRF func (RFC 3830 6.1 Table 6.1.d, RFC 6043 Table 6.3).
PRF_MIKEY_1 = 0
PRF_HMAC_SHA_256 = 1

# CS ID map types (RFC 3830 6.1, RFC 4563 3, RFC 6043 Table 6.4).
MAP_SRTP_ID = 0
MAP_EMPTY = 1
MAP_GENERIC_ID = 2

# TS types -> value length (RFC 3830 6.6, RFC 6043 Table 6.8).
TS_NTP_UTC = 0
TS_NTP = 1
TS_COUNTER = 2
TS_NTP_UTC_32 = 3
_TS_LEN = {TS_NTP_UTC: 8, TS_NTP: 8, TS_COUNTER: 4, TS_NTP_UTC_32: 4}

# KEMAC encr alg (RFC 3830 6.2, RFC 6043 Table 6.5) and MAC alg (+ Table 6.6) with MAC lengths.
ENCR_NULL = 0
ENCR_AES_CM_128 = 1
ENCR_AES_KW_128 = 2
ENCR_AES_CM_256 = 3
MAC_NULL = 0
MAC_HMAC_SHA1_160 = 1
MAC_HMAC_SHA256_256 = 2
MAC_LEN = {MAC_NULL: 0, MAC_HMAC_SHA1_160: 20, MAC_HMAC_SHA256_256: 32}

# Key data types (RFC 3830 6.13, RFC 6043 Table 6.7) and KV types (RFC 3830 6.13).
KEY_TGK = 0
KEY_TGK_SALT = 1
KEY_TEK = 2
KEY_TEK_SALT = 3
KEY_GTGK = 4
KEY_GTGK_SALT = 5
KEY_MPK = 6
_KEY_TYPES = range(0, 7)
_SALTED = (KEY_TGK_SALT, KEY_TEK_SALT, KEY_GTGK_SALT)
KV_NULL = 0
KV_SPI = 1
KV_INTERVAL = 2

# ID types (RFC 3830 6.7, RFC 6043 Table 6.10) and roles (Table 6.11).
ID_NAI = 0
ID_URI = 1
ID_BYTES = 2
ROLE_I = 1
ROLE_R = 2
ROLE_KMS = 3
ROLE_PSK = 4
ROLE_APP = 5
# TS roles (Table 6.9) and RAND roles (Table 6.13).
TS_ROLE_ISSUE = 1
TS_ROLE_START = 2
TS_ROLE_EXPIRY = 3
TS_ROLE_REKEY = 4
RAND_ROLE_I = 1
RAND_ROLE_R = 2
RAND_ROLE_KMS = 3

# Error no (RFC 3830 6.12, RFC 6043 Table 6.14); 241-255 are private use (IANA).
ERR_AUTH_FAILURE = 0
ERR_INVALID_TS = 1
ERR_INVALID_PRF = 2
ERR_INVALID_MAC = 3
ERR_INVALID_EA = 4
ERR_INVALID_HA = 5
ERR_INVALID_DH = 6
ERR_INVALID_ID = 7
ERR_INVALID_CERT = 8
ERR_INVALID_SP = 9
ERR_INVALID_SPPAR = 10
ERR_INVALID_DT = 11
ERR_UNSPECIFIED = 12
ERR_UNSUPPORTED_MESSAGE = 13
ERR_INVALID_TICKET = 14
ERR_INVALID_TPPAR = 15
ERR_TICKET_EXPIRED = 241  # private use (this project): the ticket's validity period is over
ERR_NOT_AUTHORIZED = 242  # private use (this project): identity outside the ticket's recipients

# SP prot type (RFC 3830 6.10); TLS from the private-use range 241-255 (docs/kms.md).
PROT_SRTP = 0
PROT_TLS = 241

# Ticket types (RFC 6043 Table 6.15) and the MIKEY base ticket's subtype/version (6.10).
TICKET_MIKEY_BASE = 1
TICKET_3GPP_BASE = 2
BASE_SUBTYPE = 1
BASE_VERSION = 1

# TP/TICKET flags (RFC 6043 6.10): the 12 bits D..O after the 7-bit PRF func.
F_D, F_E, F_F, F_G, F_H, F_I, F_J, F_K, F_L, F_M, F_N, F_O = (1 << (11 - i) for i in range(12))
FLAG_NAMES = "DEFGHIJKLMNO"

# General extension types (RFC 3830 6.15): 241-255 private use.
EXT_DIVERT = 241  # private use (this project): authorize a diverted-to identity (docs/kms.md)
# 248 diversion indication, 249 CDIV AS identity (kms/divert.py), 250 e2m (kms/messaging.py),
# 251 anonymous initiator (kms/anonymity.py)


def _malformed(msg: str, **details: object) -> MikeyError:
    return MikeyError("mikey.malformed", msg, **details)


def _unsupported(msg: str, **details: object) -> MikeyError:
    return MikeyError("mikey.unsupported", msg, **details)


class _Reader:
    """Bounds-checked cursor; every shortfall is ``mikey.malformed``."""

    __slots__ = ("data", "pos", "base")

    def __init__(self, data: bytes, base: int = 0) -> None:
        self.data = data
        self.pos = 0
        self.base = base  # offset of data[0] in the whole message (for spans)

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _malformed(f"truncated {what}", offset=self.base + self.pos, need=n)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

    def sub(self, n: int, what: str) -> _Reader:
        start = self.base + self.pos
        return _Reader(self.take(n, what), start)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _check_len(value: bytes, limit: int, what: str, minimum: int = 0) -> None:
    if not minimum <= len(value) <= limit:
        raise _malformed(f"{what} must be {minimum}..{limit} octets", length=len(value))


def _u8(v: int, what: str) -> bytes:
    if not 0 <= v <= 0xFF:
        raise _malformed(f"{what} out of range", value=v)
    return bytes([v])


def _u16(v: int, what: str) -> bytes:
    if not 0 <= v <= 0xFFFF:
        raise _malformed(f"{what} out of range", value=v)
    return v.to_bytes(2, "big")


# ---------------------------------------------------------------------------- header


@dataclass(frozen=True)
class SrtpCs:
    """SRTP-ID map entry (RFC 3830 6.1.1); decoded, never used in MIKEY-TICKET (RFC 6043 6.1)."""

    policy_no: int
    ssrc: int
    roc: int = 0


@dataclass(frozen=True)
class GenericCs:
    """GENERIC-ID map entry (RFC 6043 6.1.1): CS ID, protocol, policies, session data, SPI."""

    cs_id: int
    prot_type: int
    policies: tuple[int, ...] = ()
    session_data: bytes = b""
    spi: bytes = b""
    s_flag: bool = False


@dataclass
class Header:
    """Common header (RFC 3830 6.1, RFC 6043 6.1)."""

    data_type: int
    csb_id: int
    prf_func: int = PRF_HMAC_SHA_256
    v: bool = False
    cs_map_type: int = MAP_EMPTY
    cs_map: tuple[SrtpCs | GenericCs, ...] = ()
    version: int = VERSION

    def encode(self, next_payload: int) -> bytes:
        if self.version != VERSION:
            raise _unsupported("MIKEY version", version=self.version)
        if not 0 <= self.prf_func <= 0x7F:
            raise _malformed("PRF func is 7 bits", value=self.prf_func)
        if not 0 <= self.csb_id <= 0xFFFFFFFF:
            raise _malformed("CSB ID is 32 bits", value=self.csb_id)
        out = bytearray([self.version])
        out += _u8(self.data_type, "data type") + _u8(next_payload, "next payload")
        out.append((0x80 if self.v else 0) | self.prf_func)
        out += self.csb_id.to_bytes(4, "big")
        out += _u8(len(self.cs_map), "#CS") + _u8(self.cs_map_type, "CS ID map type")
        for cs in self.cs_map:
            if self.cs_map_type == MAP_SRTP_ID and isinstance(cs, SrtpCs):
                out += _u8(cs.policy_no, "policy no")
                out += (cs.ssrc & 0xFFFFFFFF).to_bytes(4, "big") + (cs.roc & 0xFFFFFFFF).to_bytes(4, "big")
            elif self.cs_map_type == MAP_GENERIC_ID and isinstance(cs, GenericCs):
                if len(cs.policies) > 0x7F:
                    raise _malformed("#P is 7 bits")
                out += _u8(cs.cs_id, "CS ID") + _u8(cs.prot_type, "prot type")
                out.append((0x80 if cs.s_flag else 0) | len(cs.policies))
                for p in cs.policies:
                    out += _u8(p, "policy no")
                out += _u16(len(cs.session_data), "session data length") + cs.session_data
                out += _u8(len(cs.spi), "SPI length") + cs.spi
            else:
                raise _malformed("CS ID map entry does not match the map type", map_type=self.cs_map_type)
        return bytes(out)

    @classmethod
    def decode(cls, r: _Reader) -> tuple[Header, int]:
        version = r.u8("HDR")
        if version != VERSION:
            raise _unsupported("MIKEY version", version=version)
        data_type = r.u8("HDR")
        next_payload = r.u8("HDR")
        vp = r.u8("HDR")
        csb_id = r.u32("HDR")
        n_cs = r.u8("HDR")
        map_type = r.u8("HDR")
        entries: list[SrtpCs | GenericCs] = []
        if map_type == MAP_SRTP_ID:
            for _ in range(n_cs):
                entries.append(SrtpCs(r.u8("SRTP-ID map"), r.u32("SRTP-ID map"), r.u32("SRTP-ID map")))
        elif map_type == MAP_GENERIC_ID:
            for _ in range(n_cs):
                cs_id = r.u8("GENERIC-ID map")
                prot = r.u8("GENERIC-ID map")
                sp = r.u8("GENERIC-ID map")
                policies = tuple(r.take(sp & 0x7F, "GENERIC-ID policies"))
                sess = r.take(r.u16("GENERIC-ID session data length"), "GENERIC-ID session data")
                spi = r.take(r.u8("GENERIC-ID SPI length"), "GENERIC-ID SPI")
                entries.append(GenericCs(cs_id, prot, policies, sess, spi, bool(sp & 0x80)))
        elif map_type == MAP_EMPTY:
            if n_cs:
                raise _malformed("empty CS ID map with a non-zero #CS (RFC 4563)", n_cs=n_cs)
        else:
            raise _unsupported("CS ID map type", map_type=map_type)
        hdr = cls(data_type, csb_id, vp & 0x7F, bool(vp & 0x80), map_type, tuple(entries), version)
        return hdr, next_payload


# ---------------------------------------------------------------------------- payloads


class Payload:
    TYPE: ClassVar[int]

    def body(self) -> bytes:  # everything after the next-payload octet
        raise NotImplementedError

    @classmethod
    def parse(cls, r: _Reader) -> Payload:
        raise NotImplementedError


@dataclass
class KeyData:
    """Key data sub-payload of KEMAC (RFC 3830 6.13, RFC 6043 6.2.1)."""

    key_type: int
    key: Secret
    salt: Secret | None = None
    kv_type: int = KV_NULL
    kv_data: tuple[bytes, ...] = ()  # (SPI,) or (valid from, valid to)

    def encode(self, next_payload: int) -> bytes:
        if self.key_type not in _KEY_TYPES:
            raise _unsupported("key data type", key_type=self.key_type)
        if (self.key_type in _SALTED) != (self.salt is not None):
            raise _malformed("salt presence does not match the key data type")
        key = self.key.reveal()
        _check_len(key, 0xFFFF, "key data")
        out = bytearray(_u8(next_payload, "next payload"))
        out.append((self.key_type << 4) | (self.kv_type & 0x0F))
        out += _u16(len(key), "key data length") + key
        if self.salt is not None:
            s = self.salt.reveal()
            out += _u16(len(s), "salt length") + s
        out += _encode_kv(self.kv_type, self.kv_data)
        return bytes(out)

    @property
    def spi(self) -> bytes | None:
        return self.kv_data[0] if self.kv_type == KV_SPI else None

    @classmethod
    def decode_all(cls, data: bytes) -> list[KeyData]:
        """The key data sub-payloads of a (decrypted) KEMAC Encr data field."""
        r = _Reader(data)
        out: list[KeyData] = []
        nxt = PT_KEY_DATA
        while nxt != PT_LAST:
            if nxt != PT_KEY_DATA:
                raise _unsupported("payload inside KEMAC", next_payload=nxt)
            nxt = r.u8("key data")
            tk = r.u8("key data")
            key_type, kv_type = tk >> 4, tk & 0x0F
            if key_type not in _KEY_TYPES:
                raise _unsupported("key data type", key_type=key_type)
            key = Secret(r.take(r.u16("key data length"), "key data"), "mikey-key")
            salt = None
            if key_type in _SALTED:
                salt = Secret(r.take(r.u16("salt length"), "salt data"), "mikey-salt")
            out.append(cls(key_type, key, salt, kv_type, _decode_kv(r, kv_type)))
        if r.left:
            raise _malformed("trailing bytes after the last key data sub-payload", trailing=r.left)
        return out

    @staticmethod
    def encode_all(items: list[KeyData]) -> bytes:
        if not items:
            raise _malformed("KEMAC without key data")
        return b"".join(
            kd.encode(PT_KEY_DATA if i + 1 < len(items) else PT_LAST) for i, kd in enumerate(items)
        )

    def __repr__(self) -> str:
        return f"<KeyData type={self.key_type} len={len(self.key)} kv={self.kv_type}>"


def _encode_kv(kv_type: int, kv_data: tuple[bytes, ...]) -> bytes:
    if kv_type == KV_NULL and not kv_data:
        return b""
    if kv_type == KV_SPI and len(kv_data) == 1:
        return _u8(len(kv_data[0]), "SPI length") + kv_data[0]
    if kv_type == KV_INTERVAL and len(kv_data) == 2:
        return b"".join(_u8(len(x), "interval length") + x for x in kv_data)
    raise _malformed("KV data does not match the KV type", kv_type=kv_type)


def _decode_kv(r: _Reader, kv_type: int) -> tuple[bytes, ...]:
    if kv_type == KV_NULL:
        return ()
    if kv_type == KV_SPI:
        return (r.take(r.u8("SPI length"), "SPI"),)
    if kv_type == KV_INTERVAL:
        vf = r.take(r.u8("VF length"), "valid from")
        return (vf, r.take(r.u8("VT length"), "valid to"))
    raise _unsupported("KV type", kv_type=kv_type)


@dataclass
class Kemac(Payload):
    """Key data transport payload (RFC 3830 6.2, RFC 6043 6.2)."""

    TYPE: ClassVar[int] = PT_KEMAC
    encr_alg: int
    encr_data: bytes
    mac_alg: int = MAC_NULL
    mac: bytes = b""

    def body(self) -> bytes:
        _check_len(self.encr_data, MAX_DATA, "KEMAC encr data")
        if self.mac_alg not in MAC_LEN:
            raise _unsupported("MAC alg", mac_alg=self.mac_alg)
        if len(self.mac) != MAC_LEN[self.mac_alg]:
            raise _malformed("MAC length does not match its algorithm")
        head = _u8(self.encr_alg, "encr alg") + _u16(len(self.encr_data), "encr data length")
        return head + self.encr_data + bytes([self.mac_alg]) + self.mac

    @classmethod
    def parse(cls, r: _Reader) -> Kemac:
        encr_alg = r.u8("KEMAC")
        if encr_alg not in (ENCR_NULL, ENCR_AES_CM_128, ENCR_AES_KW_128, ENCR_AES_CM_256):
            raise _unsupported("KEMAC encr alg", encr_alg=encr_alg)
        n = r.u16("KEMAC encr data length")
        if n > MAX_DATA:
            raise _malformed("KEMAC encr data too long", length=n)
        data = r.take(n, "KEMAC encr data")
        mac_alg = r.u8("KEMAC MAC alg")
        if mac_alg not in MAC_LEN:
            raise _unsupported("MAC alg", mac_alg=mac_alg)
        return cls(encr_alg, data, mac_alg, r.take(MAC_LEN[mac_alg], "KEMAC MAC"))


def ts_bytes(ts_type: int, value: int) -> bytes:
    n = _TS_LEN.get(ts_type)
    if n is None:
        raise _unsupported("TS type", ts_type=ts_type)
    if not 0 <= value < 1 << (8 * n):
        raise _malformed("TS value out of range")
    return value.to_bytes(n, "big")


def _read_ts(r: _Reader, ts_type: int) -> int:
    n = _TS_LEN.get(ts_type)
    if n is None:
        raise _unsupported("TS type", ts_type=ts_type)
    return int.from_bytes(r.take(n, "TS value"), "big")


@dataclass
class Timestamp(Payload):
    """T payload (RFC 3830 6.6, RFC 6043 6.3)."""

    TYPE: ClassVar[int] = PT_T
    ts_type: int
    value: int

    def body(self) -> bytes:
        return _u8(self.ts_type, "TS type") + ts_bytes(self.ts_type, self.value)

    @classmethod
    def parse(cls, r: _Reader) -> Timestamp:
        t = r.u8("T")
        return cls(t, _read_ts(r, t))

    @property
    def ntp64(self) -> int:
        """The 64-bit T of an IV: NTP-UTC-32 padded with a zero fraction (RFC 6043 6.3); a
        COUNTER as its value."""
        return self.value << 32 if self.ts_type == TS_NTP_UTC_32 else self.value


@dataclass
class TimestampRole(Payload):
    """TR payload (RFC 6043 6.4)."""

    TYPE: ClassVar[int] = PT_TR
    role: int
    ts_type: int
    value: int

    def body(self) -> bytes:
        return _u8(self.role, "TS role") + _u8(self.ts_type, "TS type") + ts_bytes(self.ts_type, self.value)

    @classmethod
    def parse(cls, r: _Reader) -> TimestampRole:
        role = r.u8("TR")
        t = r.u8("TR")
        return cls(role, t, _read_ts(r, t))


@dataclass
class Rand(Payload):
    """RAND payload (RFC 3830 6.11)."""

    TYPE: ClassVar[int] = PT_RAND
    rand: bytes

    def body(self) -> bytes:
        _check_len(self.rand, 0xFF, "RAND", 1)
        return bytes([len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: _Reader) -> Rand:
        n = r.u8("RAND length")
        return cls(r.take(n, "RAND"))


@dataclass
class RandRole(Payload):
    """RANDR payload (RFC 6043 6.8)."""

    TYPE: ClassVar[int] = PT_RANDR
    role: int
    rand: bytes

    def body(self) -> bytes:
        _check_len(self.rand, 0xFF, "RANDR", 1)
        return _u8(self.role, "RAND role") + bytes([len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: _Reader) -> RandRole:
        role = r.u8("RANDR")
        n = r.u8("RANDR length")
        return cls(role, r.take(n, "RANDR"))


def _id_check(id_type: int, data: bytes) -> None:
    if id_type not in (ID_NAI, ID_URI, ID_BYTES):
        raise _unsupported("ID type", id_type=id_type)
    _check_len(data, MAX_ID, "ID data", 1)


@dataclass
class Id(Payload):
    """ID payload (RFC 3830 6.7)."""

    TYPE: ClassVar[int] = PT_ID
    id_type: int
    data: bytes

    def body(self) -> bytes:
        _id_check(self.id_type, self.data)
        return bytes([self.id_type]) + _u16(len(self.data), "ID len") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> Id:
        t = r.u8("ID")
        data = r.take(r.u16("ID len"), "ID data")
        _id_check(t, data)
        return cls(t, data)


@dataclass
class IdRole(Payload):
    """IDR payload (RFC 6043 6.6)."""

    TYPE: ClassVar[int] = PT_IDR
    role: int
    id_type: int
    data: bytes

    def body(self) -> bytes:
        _id_check(self.id_type, self.data)
        head = _u8(self.role, "ID role") + bytes([self.id_type])
        return head + _u16(len(self.data), "ID len") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> IdRole:
        role = r.u8("IDR")
        t = r.u8("IDR")
        data = r.take(r.u16("IDR ID len"), "IDR ID data")
        _id_check(t, data)
        return cls(role, t, data)

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("identity is not UTF-8") from None


@dataclass
class SecurityPolicy(Payload):
    """SP payload (RFC 3830 6.10): policy no, prot type and (type, length, value) parameters."""

    TYPE: ClassVar[int] = PT_SP
    policy_no: int
    prot_type: int
    params: tuple[tuple[int, bytes], ...] = ()

    def body(self) -> bytes:
        p = b"".join(_u8(t, "SP param type") + _u8(len(v), "SP param length") + v for t, v in self.params)
        return _u8(self.policy_no, "policy no") + _u8(self.prot_type, "prot type") + _u16(len(p), "SP") + p

    @classmethod
    def parse(cls, r: _Reader) -> SecurityPolicy:
        no = r.u8("SP")
        prot = r.u8("SP")
        pr = r.sub(r.u16("SP policy param length"), "SP policy params")
        params = []
        while pr.left:
            t = pr.u8("SP param")
            params.append((t, pr.take(pr.u8("SP param length"), "SP param value")))
        return cls(no, prot, tuple(params))

    def param(self, ptype: int) -> bytes | None:
        return next((v for t, v in self.params if t == ptype), None)


@dataclass
class Verification(Payload):
    """V payload (RFC 3830 6.9)."""

    TYPE: ClassVar[int] = PT_V
    mac_alg: int
    mac: bytes

    def body(self) -> bytes:
        if self.mac_alg not in MAC_LEN:
            raise _unsupported("MAC alg", mac_alg=self.mac_alg)
        if len(self.mac) != MAC_LEN[self.mac_alg]:
            raise _malformed("MAC length does not match its algorithm")
        return bytes([self.mac_alg]) + self.mac

    @classmethod
    def parse(cls, r: _Reader) -> Verification:
        alg = r.u8("V")
        if alg not in MAC_LEN:
            raise _unsupported("MAC alg", mac_alg=alg)
        return cls(alg, r.take(MAC_LEN[alg], "V MAC"))


@dataclass
class Error(Payload):
    """ERR payload (RFC 3830 6.12, RFC 6043 6.9)."""

    TYPE: ClassVar[int] = PT_ERR
    error_no: int
    reserved: int = 0

    def body(self) -> bytes:
        return _u8(self.error_no, "error no") + _u16(self.reserved, "ERR reserved")

    @classmethod
    def parse(cls, r: _Reader) -> Error:
        return cls(r.u8("ERR"), r.u16("ERR reserved"))


@dataclass
class GeneralExt(Payload):
    """General extension payload (RFC 3830 6.15)."""

    TYPE: ClassVar[int] = PT_GENERAL_EXT
    ext_type: int
    data: bytes

    def body(self) -> bytes:
        _check_len(self.data, MAX_ID, "general extension data")
        return _u8(self.ext_type, "ext type") + _u16(len(self.data), "ext length") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> GeneralExt:
        t = r.u8("General Ext")
        return cls(t, r.take(r.u16("General Ext length"), "General Ext data"))


@dataclass
class TicketPolicy(Payload):
    """TP payload (RFC 6043 6.10): Ticket Type, Subtype, Version, PRF Func, flags D..O and TP Data.

    ``tp_data`` is the chain of MIKEY payloads of TP Data (its first octet names the first one):
    [IDRkms], [IDRi], [TRs], [TRe], [TRr], [KEMAC], {IDRapp}, (IDRr)."""

    TYPE: ClassVar[int] = PT_TP
    ticket_type: int
    subtype: int
    version: int
    prf_func: int
    flags: int
    tp_data: list[Payload] = field(default_factory=list)
    reserved: int = 0

    def flag(self, bit: int) -> bool:
        return bool(self.flags & bit)

    def _head(self) -> bytes:
        if not 0 <= self.prf_func <= 0x7F or not 0 <= self.flags <= 0xFFF or not 0 <= self.reserved <= 0x1F:
            raise _malformed("TP PRF func / flags / reserved out of range")
        word = (self.prf_func << 17) | (self.flags << 5) | self.reserved
        data = encode_chain(self.tp_data)
        _check_len(data, MAX_DATA, "TP Data")
        return (
            _u16(self.ticket_type, "ticket type")
            + _u8(self.subtype, "subtype")
            + _u8(self.version, "version")
            + word.to_bytes(3, "big")
            + _u16(len(data), "TP Data length")
            + data
        )

    def body(self) -> bytes:
        return self._head()

    @classmethod
    def _parse_head(cls, r: _Reader) -> tuple[int, int, int, int, int, int, list[Payload]]:
        tt = r.u16("TP/TICKET")
        sub = r.u8("TP/TICKET")
        ver = r.u8("TP/TICKET")
        word = int.from_bytes(r.take(3, "TP/TICKET PRF func and flags"), "big")
        n = r.u16("TP Data length")
        tp = decode_chain(r.sub(n, "TP Data"), "TP Data")
        return tt, sub, ver, word >> 17, (word >> 5) & 0xFFF, word & 0x1F, tp

    @classmethod
    def parse(cls, r: _Reader) -> TicketPolicy:
        tt, sub, ver, prf, flags, res, tp = cls._parse_head(r)
        return cls(tt, sub, ver, prf, flags, tp, res)

    def policy_all(self, kind: type[P], role: int | None = None) -> list[P]:
        return [
            p
            for p in self.tp_data
            if isinstance(p, kind) and (role is None or getattr(p, "role", None) == role)
        ]

    def policy_first(self, kind: type[P], role: int | None = None) -> P | None:
        found = self.policy_all(kind, role)
        return found[0] if found else None


@dataclass
class Ticket(TicketPolicy):
    """TICKET payload (RFC 6043 6.10): the granted Ticket Policy, Ticket Data and Initiator Data."""

    TYPE: ClassVar[int] = PT_TICKET
    ticket_data: bytes = b""
    initiator_data: bytes = b""

    def body(self) -> bytes:
        return self.body_without_initiator_data() + self.initiator_data_field()

    def body_without_initiator_data(self) -> bytes:
        _check_len(self.ticket_data, MAX_DATA, "Ticket Data")
        return self._head() + _u16(len(self.ticket_data), "Ticket Data length") + self.ticket_data

    def initiator_data_field(self) -> bytes:
        _check_len(self.initiator_data, MAX_ID, "Initiator Data")
        return _u16(len(self.initiator_data), "Initiator Data length") + self.initiator_data

    @classmethod
    def parse(cls, r: _Reader) -> Ticket:
        tt, sub, ver, prf, flags, res, tp = cls._parse_head(r)
        data = r.take(r.u16("Ticket Data length"), "Ticket Data")
        idata = r.take(r.u16("Initiator Data length"), "Initiator Data")
        if idata:
            decode_chain(_Reader(idata), "Initiator Data")  # structure check; read by initiator_payloads()
        return cls(tt, sub, ver, prf, flags, tp, res, data, idata)

    @property
    def policy(self) -> TicketPolicy:
        return TicketPolicy(
            self.ticket_type,
            self.subtype,
            self.version,
            self.prf_func,
            self.flags,
            self.tp_data,
            self.reserved,
        )

    def initiator_payloads(self) -> list[Payload]:
        return decode_chain(_Reader(self.initiator_data), "Initiator Data") if self.initiator_data else []

    def __repr__(self) -> str:
        n = len(self.ticket_data)
        return f"<Ticket type={self.ticket_type} flags={flag_text(self.flags)} data={n} octets>"


def flag_text(flags: int) -> str:
    return "".join(n for i, n in enumerate(FLAG_NAMES) if flags & (1 << (11 - i))) or "-"


PAYLOADS: dict[int, type[Payload]] = {
    cls.TYPE: cls
    for cls in (
        Kemac,
        Timestamp,
        Id,
        Verification,
        SecurityPolicy,
        Rand,
        Error,
        TimestampRole,
        IdRole,
        RandRole,
        TicketPolicy,
        Ticket,
        GeneralExt,
    )
}

P = TypeVar("P", bound=Payload)


def encode_chain(payloads: list[Payload], *, lead: bool = True, initiator_data: bool = True) -> bytes:
    """A payload chain; with ``lead`` it starts with the octet naming the first payload
    (TP Data, Initiator Data: RFC 6043 6.10 "The first 8 bits identify the first payload").
    Without ``initiator_data`` a TICKET loses its Initiator Data length and Initiator Data
    fields (what a TRANSFER_INIT's MAC covers, RFC 6043 5.5)."""
    if not payloads:
        return b""
    types = [p.TYPE for p in payloads]
    out = bytearray([types[0]] if lead else [])
    for i, p in enumerate(payloads):
        out.append(types[i + 1] if i + 1 < len(types) else PT_LAST)
        out += p.body_without_initiator_data() if isinstance(p, Ticket) and not initiator_data else p.body()
    return bytes(out)


def decode_chain(r: _Reader, what: str, first: int | None = None) -> list[Payload]:
    """Parse a payload chain to the end of ``r``; ``first`` None reads the leading type octet."""
    if first is None:
        if not r.left:
            return []
        first = r.u8(what)
    out: list[Payload] = []
    nxt = first
    while nxt != PT_LAST:
        cls_ = PAYLOADS.get(nxt)
        if cls_ is None:
            raise _unsupported(f"payload type in {what}", next_payload=nxt, offset=r.base + r.pos)
        following = r.u8("next payload")
        out.append(cls_.parse(r))
        nxt = following
    if r.left:
        raise _malformed(f"trailing bytes after the last payload of {what}", trailing=r.left)
    return out


# ---------------------------------------------------------------------------- message


@dataclass
class Message:
    header: Header
    payloads: list[Payload] = field(default_factory=list)

    def encode(self) -> bytes:
        first = self.payloads[0].TYPE if self.payloads else PT_LAST
        out = self.header.encode(first) + encode_chain(self.payloads, lead=False)
        if len(out) > MAX_MESSAGE:
            raise _malformed("MIKEY message too long", length=len(out))
        return out

    def encode_without_initiator_data(self) -> bytes:
        """The message as a TRANSFER_INIT's MAC sees it: without the TICKET's Initiator Data
        length and Initiator Data fields (RFC 6043 5.5)."""
        first = self.payloads[0].TYPE if self.payloads else PT_LAST
        return self.header.encode(first) + encode_chain(self.payloads, lead=False, initiator_data=False)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _malformed("a MIKEY message is bytes")
        data = bytes(data)
        if len(data) > MAX_MESSAGE:
            raise _malformed("MIKEY message too long", length=len(data))
        r = _Reader(data)
        header, nxt = Header.decode(r)
        return cls(header, decode_chain(r, "message", nxt))

    def all(self, kind: type[P], role: int | None = None) -> list[P]:
        return [
            p for p in self.payloads if type(p) is kind and (role is None or getattr(p, "role", None) == role)
        ]

    def first(self, kind: type[P], role: int | None = None) -> P | None:
        found = self.all(kind, role)
        return found[0] if found else None

    def one(self, kind: type[P], role: int | None = None) -> P:
        """Exactly one payload of this kind (and role); otherwise ``mikey.malformed``."""
        found = self.all(kind, role)
        if len(found) != 1:
            raise _malformed(
                f"{self.name} needs exactly one {kind.__name__}"
                + (f" with role {role}" if role is not None else ""),
                found=len(found),
            )
        return found[0]

    @property
    def name(self) -> str:
        return DATA_TYPES.get(self.header.data_type, f"data type {self.header.data_type}")

    def __iter__(self) -> Iterator[Payload]:
        return iter(self.payloads)


# ---------------------------------------------------------------------------- base ticket data


@dataclass
class TicketHeader:
    """THDR (RFC 6043 A.3): first payload of MIKEY base ticket data (no payload number of its own)."""

    data: bytes = b""

    def encode(self, next_payload: int) -> bytes:
        _check_len(self.data, MAX_ID, "THDR Data")
        return _u8(next_payload, "next payload") + _u16(len(self.data), "THDR Data length") + self.data


def encode_base_ticket(thdr: TicketHeader, payloads: list[Payload]) -> bytes:
    """Ticket Data = THDR, T, RAND, KEMAC, [IDRpsk], V (RFC 6043 Appendix A)."""
    return thdr.encode(payloads[0].TYPE if payloads else PT_LAST) + encode_chain(payloads, lead=False)


def decode_base_ticket(data: bytes) -> tuple[TicketHeader, list[Payload]]:
    r = _Reader(data)
    nxt = r.u8("THDR")
    thdr = TicketHeader(r.take(r.u16("THDR Data length"), "THDR Data"))
    return thdr, decode_chain(r, "Ticket Data", nxt)
