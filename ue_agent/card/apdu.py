"""Command APDUs and the one place where T=0 procedure status words are handled.

:class:`ApduLink` sends an :class:`Apdu` over an :class:`ApduTransport` and deals with
``61xx`` (GET RESPONSE loop on the same channel), ``6Cxx`` (resend with the corrected
Le), ``9Fxx`` (the 2G form of 61xx), ``91xx`` (success, proactive command pending) and
``62xx``/``63xx`` after a case-4 command (dummy GET RESPONSE with Le=00, TS 102 221
7.3.1.1.4). Callers get one :class:`Response` and decide on the final status word.

Response data may hold keys (RES, CK, IK, Ks_ext_NAF); nothing here logs data bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import CardError

log = logging.getLogger(__name__)

INS_GET_RESPONSE = 0xC0
_MAX_GET_RESPONSE = 64  # a card chaining 61xx forever is broken


def cla_for_channel(cla: int, channel: int) -> int:
    """CLA with logical channel ``channel`` coded in (TS 102 221 10.1.1).

    ``cla`` is the class of the command on the basic channel (``00`` ISO, ``80`` TS 102
    221). Channels 0-3 go in b2b1 (``0X``/``8X``); 4-19 use the further interindustry
    class (``4X``/``CX``) with ``channel - 4`` in b4..b1. No secure messaging, no chaining.
    """
    if not 0 <= channel <= 19:
        raise ValueError(f"logical channel {channel} out of range 0..19")
    if channel < 4:
        return (cla & 0x80) | channel
    return (cla & 0x80) | 0x40 | (channel - 4)


def channel_of_cla(cla: int) -> int:
    """The logical channel a CLA byte addresses."""
    return 4 + (cla & 0x0F) if cla & 0x40 else cla & 0x03


@dataclass(frozen=True)
class Apdu:
    """A short command APDU. ``le``: None (no Le), 1..256 (256 is sent as 00)."""

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"APDU {name} out of range")
        if len(self.data) > 255:
            raise ValueError("APDU data longer than 255 bytes (extended APDUs are not used)")
        if self.le is not None and not 1 <= self.le <= 256:
            raise ValueError("Le must be 1..256")

    @property
    def channel(self) -> int:
        return channel_of_cla(self.cla)

    def with_le(self, le: int) -> Apdu:
        return Apdu(self.cla, self.ins, self.p1, self.p2, self.data, le)

    def encode(self) -> bytes:
        out = bytes([self.cla, self.ins, self.p1, self.p2])
        if self.data:
            out += bytes([len(self.data)]) + self.data
        if self.le is not None:
            out += bytes([self.le & 0xFF])
        elif not self.data:
            out += b"\x00"  # case 1 as a T=0 TPDU: P3 = 00
        return out

    def header(self) -> str:
        return f"{self.cla:02X} {self.ins:02X} {self.p1:02X} {self.p2:02X}"


@dataclass(frozen=True)
class Response:
    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        """9000, or 91xx (success with a proactive command pending)."""
        return self.sw == 0x9000 or self.sw >> 8 == 0x91

    @property
    def proactive_pending(self) -> bool:
        return self.sw >> 8 == 0x91

    def __repr__(self) -> str:  # data may be key material
        return f"Response(sw={self.sw:04X}, {len(self.data)} data bytes)"


def split_response(raw: bytes) -> tuple[bytes, int]:
    if len(raw) < 2:
        raise CardError("card.malformed_response", "the card answered without a status word", length=len(raw))
    return raw[:-2], int.from_bytes(raw[-2:], "big")


#: instructions that never change the current EF or DF (TS 102 221 8.4, 10.1.2): AUTHENTICATE,
#: GET RESPONSE, STATUS, VERIFY/UNBLOCK PIN, ENVELOPE, FETCH, TERMINAL RESPONSE; READ and
#: UPDATE BINARY too unless P1 b8 selects a file by SFI (11.1.3.1)
_SELECTION_NEUTRAL = frozenset({0x88, 0xC0, 0xF2, 0x20, 0x2C, 0xC2, 0x12, 0x14})
_BINARY = frozenset({0xB0, 0xD6})


class ApduLink:
    """Sends APDUs over one transport; counts every APDU that goes to the card."""

    def __init__(self, transport: ApduTransport) -> None:
        self.transport = transport
        self.count = 0
        #: bumped by every APDU that may change a channel's current EF/DF (any SELECT, SFI
        #: access, MANAGE CHANNEL, ...): a caller that selected an EF can tell it is still current
        self.selection_epoch = 0

    def _transmit(self, apdu: Apdu) -> tuple[bytes, int]:
        self.count += 1
        if apdu.ins not in _SELECTION_NEUTRAL and not (apdu.ins in _BINARY and not apdu.p1 & 0x80):
            self.selection_epoch += 1
        raw = self.transport.transmit(apdu.encode())
        data, sw = split_response(raw)
        log.debug("APDU %s -> %04X (%d bytes)", apdu.header(), sw, len(data))
        return data, sw

    def send(self, apdu: Apdu) -> Response:
        data, sw = self._transmit(apdu)
        if sw >> 8 == 0x6C:
            # wrong Le: resend the same command with the length the card asked for
            data, sw = self._transmit(apdu.with_le(sw & 0xFF or 256))
            if sw >> 8 == 0x6C:
                raise CardError(
                    "card.malformed_response", "the card asked twice for another Le", sw=f"{sw:04X}"
                )
        if sw >> 8 in (0x62, 0x63) and apdu.data and apdu.le is not None and not data:
            warning = sw
            more, sw2 = self._get_response(apdu.channel, 256, allow_6c=True)
            return Response(more, warning if sw2 in (0x9000,) or not more else sw2)
        if sw >> 8 in (0x61, 0x9F):
            more, sw = self._get_response(apdu.channel, sw & 0xFF or 256, allow_6c=False)
            data += more
        return Response(data, sw)

    def _get_response(self, channel: int, le: int, allow_6c: bool) -> tuple[bytes, int]:
        """GET RESPONSE on ``channel`` while the card says more bytes are available."""
        out = bytearray()
        cla = cla_for_channel(0x00, channel)
        for _ in range(_MAX_GET_RESPONSE):
            data, sw = self._transmit(Apdu(cla, INS_GET_RESPONSE, 0, 0, le=le))
            if sw >> 8 == 0x6C and allow_6c:
                allow_6c = False
                le = sw & 0xFF or 256
                continue
            out += data
            if sw >> 8 != 0x61:
                return bytes(out), sw
            le = sw & 0xFF or 256
        raise CardError("card.malformed_response", "the card never ended its 61xx chain")
