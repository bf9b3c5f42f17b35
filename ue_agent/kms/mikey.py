"""MIKEY (RFC 3830) and MIKEY-TICKET (RFC 6043) messages: a sans-IO codec.

A message is a common header followed by a chain of payloads, each naming the type of
the next one. :class:`Message` holds the header and the payloads as small dataclasses;
``encode()`` rebuilds the chain, ``Message.decode()`` parses strictly: truncation, wrong
lengths, unknown payload types, trailing bytes, oversize fields and wrong versions raise
:class:`MikeyError` (``mikey.malformed`` / ``mikey.unsupported``), never an IndexError.

Numeric values marked [U] in docs/kms.md could not be checked against the RFC text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from ue_agent.errors import MikeyError
from ue_agent.secret import Secret

VERSION = 1
MAX_MESSAGE = 0xFFFF
MAX_ID = 1024  # identities (URIs, NAIs)
MAX_TICKET = 8192
MAX_KEY = 256
MIN_RAND = 16  # RFC 3830 5.3: at least 128 bits of randomness

# Data types (RFC 3830 6.1; MIKEY-TICKET 11-18 per RFC 6043 6.1 [U]).
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

# Next-payload values (RFC 3830 6.1, RFC 6043 6).
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

# CS ID map types.
MAP_SRTP_ID = 0
MAP_EMPTY = 1
MAP_GENERIC_ID = 2

# Timestamp types -> value length.
TS_NTP_UTC = 0
TS_NTP = 1
TS_COUNTER = 2
TS_NTP_UTC_32 = 3
_TS_LEN = {TS_NTP_UTC: 8, TS_NTP: 8, TS_COUNTER: 4, TS_NTP_UTC_32: 4}

# KEMAC / V algorithms.
ENCR_NULL = 0
ENCR_AES_CM_128 = 1
ENCR_AES_KW_128 = 2
MAC_NULL = 0
MAC_HMAC_SHA1_160 = 1
MAC_LEN = {MAC_NULL: 0, MAC_HMAC_SHA1_160: 20}

# Key data types and key validity types.
KEY_TGK = 0
KEY_TGK_SALT = 1
KEY_TEK = 2
KEY_TEK_SALT = 3
KV_NULL = 0
KV_SPI = 1
KV_INTERVAL = 2

# ID types and roles (RFC 6043 6.6), TS roles, RAND roles [U].
ID_NAI = 0
ID_URI = 1
ROLE_I = 1
ROLE_R = 2
ROLE_KMS = 3
ROLE_PSK = 4
ROLE_APP = 5
TS_ROLE_ISSUE = 1
TS_ROLE_START = 2
TS_ROLE_EXPIRY = 3
TS_ROLE_REKEY = 4
RAND_ROLE_I = 1
RAND_ROLE_R = 2
RAND_ROLE_KMS = 3

# Error numbers (RFC 3830 6.12); 241-255 are private use, taken by the lab KMS profile.
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
ERR_TICKET_EXPIRED = 241
ERR_NOT_AUTHORIZED = 242
ERR_TICKET_INVALID = 243

# SP protocol types (0 SRTP, RFC 3830 6.10); TLS per TS 33.328 H.3, value [U].
PROT_SRTP = 0
PROT_TLS = 5


def _malformed(msg: str, **details) -> MikeyError:
    return MikeyError("mikey.malformed", msg, **details)


def _unsupported(msg: str, **details) -> MikeyError:
    return MikeyError("mikey.unsupported", msg, **details)


class _Reader:
    """Bounds-checked cursor over a message; every shortfall is ``mikey.malformed``."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _malformed(f"truncated {what}", offset=self.pos, need=n)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.take(4, what), "big")

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
    """SRTP-ID map entry: one SRTP stream (RFC 3830 6.1.1)."""

    policy_no: int
    ssrc: int
    roc: int = 0


@dataclass(frozen=True)
class GenericCs:
    """GENERIC-ID map entry (RFC 6043): protocol, policies, session data, SPI."""

    cs_id: int
    prot_type: int
    policies: tuple[int, ...] = ()
    session_data: bytes = b""
    spi: bytes = b""
    s_flag: bool = False


@dataclass
class Header:
    data_type: int
    csb_id: int
    prf_func: int = 1
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
                    raise _malformed("too many policies in a GENERIC-ID entry")
                out += _u8(cs.cs_id, "cs id") + _u8(cs.prot_type, "prot type")
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
        version = r.u8("header")
        if version != VERSION:
            raise _unsupported("MIKEY version", version=version)
        data_type = r.u8("header")
        next_payload = r.u8("header")
        vp = r.u8("header")
        csb_id = r.u32("header")
        n_cs = r.u8("header")
        map_type = r.u8("header")
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
                sess = r.take(r.u16("GENERIC-ID map"), "GENERIC-ID session data")
                spi = r.take(r.u8("GENERIC-ID map"), "GENERIC-ID SPI")
                entries.append(GenericCs(cs_id, prot, policies, sess, spi, bool(sp & 0x80)))
        elif map_type == MAP_EMPTY:
            if n_cs:
                raise _malformed("empty CS ID map with a non-zero #CS", n_cs=n_cs)
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
    """Key data sub-payload of KEMAC (RFC 3830 6.13)."""

    key_type: int
    key: Secret
    salt: Secret | None = None
    kv_type: int = KV_NULL
    kv_data: tuple[bytes, ...] = ()  # (SPI,) or (valid from, valid to)

    def encode(self, next_payload: int) -> bytes:
        if self.key_type not in (KEY_TGK, KEY_TGK_SALT, KEY_TEK, KEY_TEK_SALT):
            raise _unsupported("key data type", key_type=self.key_type)
        has_salt = self.key_type in (KEY_TGK_SALT, KEY_TEK_SALT)
        if has_salt != (self.salt is not None):
            raise _malformed("salt presence does not match the key data type")
        key = self.key.reveal()
        _check_len(key, MAX_KEY, "key data", 1)
        out = bytearray(_u8(next_payload, "next payload"))
        out.append((self.key_type << 4) | (self.kv_type & 0x0F))
        out += _u16(len(key), "key length") + key
        if self.salt is not None:
            s = self.salt.reveal()
            _check_len(s, MAX_KEY, "salt", 1)
            out += _u16(len(s), "salt length") + s
        out += _encode_kv(self.kv_type, self.kv_data)
        return bytes(out)

    @classmethod
    def decode_all(cls, data: bytes) -> list[KeyData]:
        """Key data sub-payloads from a (decrypted) KEMAC encr data field."""
        r = _Reader(data)
        out: list[KeyData] = []
        nxt = PT_KEY_DATA
        while nxt != PT_LAST:
            if nxt != PT_KEY_DATA:
                raise _unsupported("payload inside KEMAC", next_payload=nxt)
            nxt = r.u8("key data")
            tk = r.u8("key data")
            key_type, kv_type = tk >> 4, tk & 0x0F
            if key_type not in (KEY_TGK, KEY_TGK_SALT, KEY_TEK, KEY_TEK_SALT):
                raise _unsupported("key data type", key_type=key_type)
            klen = r.u16("key data")
            if not 1 <= klen <= MAX_KEY:
                raise _malformed("key length", length=klen)
            key = Secret(r.take(klen, "key"), "mikey-key")
            salt = None
            if key_type in (KEY_TGK_SALT, KEY_TEK_SALT):
                slen = r.u16("salt")
                if not 1 <= slen <= MAX_KEY:
                    raise _malformed("salt length", length=slen)
                salt = Secret(r.take(slen, "salt"), "mikey-salt")
            out.append(cls(key_type, key, salt, kv_type, _decode_kv(r, kv_type)))
        if r.left:
            raise _malformed("trailing bytes after the key data", trailing=r.left)
        if not out:
            raise _malformed("KEMAC without key data")
        return out

    @staticmethod
    def encode_all(items: list[KeyData]) -> bytes:
        if not items:
            raise _malformed("KEMAC without key data")
        return b"".join(
            kd.encode(PT_KEY_DATA if i + 1 < len(items) else PT_LAST) for i, kd in enumerate(items)
        )


def _encode_kv(kv_type: int, kv_data: tuple[bytes, ...]) -> bytes:
    if kv_type == KV_NULL:
        if kv_data:
            raise _malformed("KV data with KV type Null")
        return b""
    if kv_type == KV_SPI and len(kv_data) == 1:
        return _u8(len(kv_data[0]), "SPI length") + kv_data[0]
    if kv_type == KV_INTERVAL and len(kv_data) == 2:
        return b"".join(_u8(len(x), "interval length") + x for x in kv_data)
    raise _unsupported("key validity", kv_type=kv_type)


def _decode_kv(r: _Reader, kv_type: int) -> tuple[bytes, ...]:
    if kv_type == KV_NULL:
        return ()
    if kv_type == KV_SPI:
        return (r.take(r.u8("SPI"), "SPI"),)
    if kv_type == KV_INTERVAL:
        vf = r.take(r.u8("interval"), "valid from")
        return (vf, r.take(r.u8("interval"), "valid to"))
    raise _unsupported("key validity type", kv_type=kv_type)


@dataclass
class Kemac(Payload):
    """Key data transport (RFC 3830 6.2): encrypted key data sub-payloads and a MAC."""

    TYPE: ClassVar[int] = PT_KEMAC
    encr_alg: int
    encr_data: bytes
    mac_alg: int = MAC_NULL
    mac: bytes = b""

    def body(self) -> bytes:
        _check_len(self.encr_data, MAX_TICKET, "KEMAC encr data", 1)
        if self.mac_alg not in MAC_LEN:
            raise _unsupported("MAC algorithm", mac_alg=self.mac_alg)
        if len(self.mac) != MAC_LEN[self.mac_alg]:
            raise _malformed("MAC length does not match its algorithm")
        return (
            _u8(self.encr_alg, "encr alg")
            + _u16(len(self.encr_data), "encr data length")
            + self.encr_data
            + bytes([self.mac_alg])
            + self.mac
        )

    @classmethod
    def parse(cls, r: _Reader) -> Kemac:
        encr_alg = r.u8("KEMAC")
        if encr_alg not in (ENCR_NULL, ENCR_AES_CM_128, ENCR_AES_KW_128):
            raise _unsupported("KEMAC encryption algorithm", encr_alg=encr_alg)
        n = r.u16("KEMAC")
        if not 1 <= n <= MAX_TICKET:
            raise _malformed("KEMAC encr data length", length=n)
        data = r.take(n, "KEMAC encr data")
        mac_alg = r.u8("KEMAC")
        if mac_alg not in MAC_LEN:
            raise _unsupported("MAC algorithm", mac_alg=mac_alg)
        return cls(encr_alg, data, mac_alg, r.take(MAC_LEN[mac_alg], "KEMAC MAC"))


@dataclass
class Timestamp(Payload):
    """T payload (RFC 3830 6.6)."""

    TYPE: ClassVar[int] = PT_T
    ts_type: int
    value: int

    def body(self) -> bytes:
        return _u8(self.ts_type, "TS type") + _ts_value(self.ts_type, self.value)

    @classmethod
    def parse(cls, r: _Reader) -> Timestamp:
        t = r.u8("T")
        return cls(t, _read_ts(r, t))


def _ts_value(ts_type: int, value: int) -> bytes:
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
class TimestampRole(Payload):
    """TR payload (RFC 6043): a timestamp with a role (issue, start, expiry, rekey)."""

    TYPE: ClassVar[int] = PT_TR
    role: int
    ts_type: int
    value: int

    def body(self) -> bytes:
        return _u8(self.role, "TS role") + _u8(self.ts_type, "TS type") + _ts_value(self.ts_type, self.value)

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
        _check_len(self.rand, 0xFF, "RAND", MIN_RAND)
        return bytes([len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: _Reader) -> Rand:
        n = r.u8("RAND")
        if n < MIN_RAND:
            raise _malformed("RAND shorter than 128 bits", length=n)
        return cls(r.take(n, "RAND"))


@dataclass
class RandRole(Payload):
    """RANDR payload (RFC 6043): RAND with a role (RANDRi, RANDRr, RANDRkms)."""

    TYPE: ClassVar[int] = PT_RANDR
    role: int
    rand: bytes

    def body(self) -> bytes:
        _check_len(self.rand, 0xFF, "RANDR", MIN_RAND)
        return _u8(self.role, "RAND role") + bytes([len(self.rand)]) + self.rand

    @classmethod
    def parse(cls, r: _Reader) -> RandRole:
        role = r.u8("RANDR")
        n = r.u8("RANDR")
        if n < MIN_RAND:
            raise _malformed("RANDR shorter than 128 bits", length=n)
        return cls(role, r.take(n, "RANDR"))


def _id_check(id_type: int, data: bytes) -> None:
    if id_type not in (ID_NAI, ID_URI):
        raise _unsupported("ID type", id_type=id_type)
    _check_len(data, MAX_ID, "identity", 1)


@dataclass
class Id(Payload):
    """ID payload (RFC 3830 6.7)."""

    TYPE: ClassVar[int] = PT_ID
    id_type: int
    data: bytes

    def body(self) -> bytes:
        _id_check(self.id_type, self.data)
        return bytes([self.id_type]) + _u16(len(self.data), "ID length") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> Id:
        t = r.u8("ID")
        data = r.take(r.u16("ID"), "ID data")
        _id_check(t, data)
        return cls(t, data)


@dataclass
class IdRole(Payload):
    """IDR payload (RFC 6043 6.6): an identity with a role (IDRi, IDRr, IDRkms, IDRpsk...)."""

    TYPE: ClassVar[int] = PT_IDR
    role: int
    id_type: int
    data: bytes

    def body(self) -> bytes:
        _id_check(self.id_type, self.data)
        head = _u8(self.role, "ID role") + bytes([self.id_type])
        return head + _u16(len(self.data), "ID length") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> IdRole:
        role = r.u8("IDR")
        t = r.u8("IDR")
        data = r.take(r.u16("IDR"), "IDR data")
        _id_check(t, data)
        return cls(role, t, data)

    @property
    def text(self) -> str:
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("identity is not UTF-8") from None


@dataclass
class TicketPolicy(Payload):
    """TP payload: ticket type and the requested policy (encoding: docs/kms.md)."""

    TYPE: ClassVar[int] = PT_TP
    ticket_type: int
    policy: bytes

    def body(self) -> bytes:
        _check_len(self.policy, MAX_ID, "ticket policy")
        return _u16(self.ticket_type, "ticket type") + _u16(len(self.policy), "policy length") + self.policy

    @classmethod
    def parse(cls, r: _Reader) -> TicketPolicy:
        tt = r.u16("TP")
        n = r.u16("TP")
        if n > MAX_ID:
            raise _malformed("ticket policy too long", length=n)
        return cls(tt, r.take(n, "ticket policy"))


@dataclass
class Ticket(Payload):
    """TICKET payload (RFC 6043): ticket type and opaque ticket data."""

    TYPE: ClassVar[int] = PT_TICKET
    ticket_type: int
    data: bytes

    def body(self) -> bytes:
        _check_len(self.data, MAX_TICKET, "ticket data", 1)
        return _u16(self.ticket_type, "ticket type") + _u16(len(self.data), "ticket length") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> Ticket:
        tt = r.u16("TICKET")
        n = r.u16("TICKET")
        if not 1 <= n <= MAX_TICKET:
            raise _malformed("ticket data length", length=n)
        return cls(tt, r.take(n, "ticket data"))


@dataclass
class SecurityPolicy(Payload):
    """SP payload (RFC 3830 6.10): policy number, protocol and (type, value) parameters."""

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
        pr = _Reader(r.take(r.u16("SP"), "SP parameters"))
        params = []
        while pr.left:
            t = pr.u8("SP parameter")
            params.append((t, pr.take(pr.u8("SP parameter"), "SP parameter value")))
        return cls(no, prot, tuple(params))

    def param(self, ptype: int) -> bytes | None:
        return next((v for t, v in self.params if t == ptype), None)


@dataclass
class Verification(Payload):
    """V payload (RFC 3830 6.9): MAC over the message (see ue_agent.kms.protect)."""

    TYPE: ClassVar[int] = PT_V
    mac_alg: int
    mac: bytes

    def body(self) -> bytes:
        if self.mac_alg not in MAC_LEN:
            raise _unsupported("MAC algorithm", mac_alg=self.mac_alg)
        if len(self.mac) != MAC_LEN[self.mac_alg]:
            raise _malformed("MAC length does not match its algorithm")
        return bytes([self.mac_alg]) + self.mac

    @classmethod
    def parse(cls, r: _Reader) -> Verification:
        alg = r.u8("V")
        if alg not in MAC_LEN:
            raise _unsupported("MAC algorithm", mac_alg=alg)
        return cls(alg, r.take(MAC_LEN[alg], "V MAC"))


@dataclass
class Error(Payload):
    """ERR payload (RFC 3830 6.12)."""

    TYPE: ClassVar[int] = PT_ERR
    error_no: int

    def body(self) -> bytes:
        return _u8(self.error_no, "error no") + b"\x00\x00"

    @classmethod
    def parse(cls, r: _Reader) -> Error:
        no = r.u8("ERR")
        r.take(2, "ERR reserved")
        return cls(no)


@dataclass
class GeneralExt(Payload):
    """General extension payload (RFC 3830 6.15)."""

    TYPE: ClassVar[int] = PT_GENERAL_EXT
    ext_type: int
    data: bytes

    def body(self) -> bytes:
        _check_len(self.data, MAX_ID, "general extension")
        return _u8(self.ext_type, "ext type") + _u16(len(self.data), "ext length") + self.data

    @classmethod
    def parse(cls, r: _Reader) -> GeneralExt:
        t = r.u8("GENERAL_EXT")
        n = r.u16("GENERAL_EXT")
        if n > MAX_ID:
            raise _malformed("general extension too long", length=n)
        return cls(t, r.take(n, "GENERAL_EXT data"))


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


# ---------------------------------------------------------------------------- message


@dataclass
class Message:
    header: Header
    payloads: list[Payload] = field(default_factory=list)

    def encode(self) -> bytes:
        types = [p.TYPE for p in self.payloads]
        out = bytearray(self.header.encode(types[0] if types else PT_LAST))
        for i, p in enumerate(self.payloads):
            out.append(types[i + 1] if i + 1 < len(types) else PT_LAST)
            out += p.body()
        if len(out) > MAX_MESSAGE:
            raise _malformed("MIKEY message too long", length=len(out))
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise _malformed("a MIKEY message is bytes")
        data = bytes(data)
        if len(data) > MAX_MESSAGE:
            raise _malformed("MIKEY message too long", length=len(data))
        r = _Reader(data)
        header, nxt = Header.decode(r)
        payloads: list[Payload] = []
        while nxt != PT_LAST:
            cls_ = PAYLOADS.get(nxt)
            if cls_ is None:
                raise _unsupported("payload type", next_payload=nxt, offset=r.pos)
            following = r.u8("next payload")
            payloads.append(cls_.parse(r))
            nxt = following
        if r.left:
            raise _malformed("trailing bytes after the last payload", trailing=r.left)
        return cls(header, payloads)

    def all(self, kind: type[P], role: int | None = None) -> list[P]:
        return [
            p
            for p in self.payloads
            if isinstance(p, kind) and (role is None or getattr(p, "role", None) == role)
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
