"""The soft UICC: a USIM (and, when the subscriber file says so, an ISIM) in software.

It answers command APDUs as a UICC on T=0 (``t0=True``: answers with data go through
``61xx`` + GET RESPONSE, a wrong Le gets ``6Cxx``) or T=1, with the status words of
TS 102 221 / 31.102 / 31.103. The PC/SC lab card (vpcd) and the pty modem serve this
object; :class:`SoftUiccTransport` carries APDUs to it in process.

Keys stay inside: K/OPc come from the subscriber file, Ks (GBA_U) and Ks_int_NAF never
leave the card. docs/card.md describes the file system, the commands and the fault hooks.
"""

from __future__ import annotations

import hmac
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ue_agent.card import ef as catalogue
from ue_agent.card.transport import ApduTransport
from ue_agent.crypto.kdf import ks_int_naf, ks_naf
from ue_agent.crypto.milenage import Milenage, gsm_kc, gsm_sres
from ue_agent.errors import ConfigError, TransportError
from ue_agent.lab.uicc_fs import ISIM_AID, USIM_AID, UST_SERVICES, Df, Ef, build_mf, isim_services, pad, tlv
from ue_agent.lab.uicc_pin import PIN_INS, PinSw, SoftPin
from ue_agent.secret import Secret
from ue_agent.subscriber import Subscriber

#: logical channels of the soft UICC by default, the basic channel included: 4 (channels 0..3), as
#: many cards in the field (TS 102 221 allows 1..20, 11.1.17; the ATR says how many, below)
MAX_CHANNELS = 4

# INS codes and whether they are ISO-class (CLA 0X/4X/6X) or TS 102 221 class (8X/CX/EX).
INS_SELECT, INS_READ_BINARY, INS_READ_RECORD, INS_UPDATE_BINARY = 0xA4, 0xB0, 0xB2, 0xD6
INS_GET_RESPONSE, INS_MANAGE_CHANNEL, INS_AUTHENTICATE, INS_STATUS = 0xC0, 0x70, 0x88, 0xF2
_ISO_INS = {INS_SELECT, INS_READ_BINARY, INS_READ_RECORD, INS_UPDATE_BINARY}
_ISO_INS |= {INS_GET_RESPONSE, INS_MANAGE_CHANNEL, INS_AUTHENTICATE}
_ISO_INS |= PIN_INS  # VERIFY/CHANGE/DISABLE/ENABLE/UNBLOCK PIN (TS 102 221 10.1.2)
_PROPRIETARY_INS = {INS_STATUS}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def build_atr(t0: bool, channels: int = MAX_CHANNELS) -> bytes:
    """A UICC ATR: TA1 96, T=0 or T=1 offered, T=15 global bytes (class A/B/C), TCK.

    Historical bytes: category 80, card service data 31 E0 (selection by full and
    partial DF name, EF_DIR present), card capabilities 73 FE 21 xx: the third software
    function table (ISO/IEC 7816-4; TS 102 221 annex examples '15': 6 channels, '17': 8 or
    more): b5 b4 numbers assigned by card and by terminal, b3..b1 = channels - 1 (7: 8 or more).
    """
    third = 0x18 | (min(channels, 8) - 1)
    hist = bytes.fromhex("8031e073fe21") + bytes([third])
    body = bytes([0x90 | len(hist), 0x96, 0x80 if t0 else 0x81, 0x1F, 0xC7]) + hist
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


class SwError(Exception):
    """Internal: abort the command with this status word."""

    def __init__(self, sw: int) -> None:
        super().__init__(f"{sw:04X}")
        self.sw = sw


@dataclass
class _Channel:
    df: Df  # current DF: the MF or an ADF
    app: Df | None = None  # current application
    ef: Ef | None = None
    record: int = 0  # current record number (0: none)
    pending: bytes = b""  # response waiting for GET RESPONSE


@dataclass
class _Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes
    le: int | None  # None: no Le; 0 in the APDU is 256

    @classmethod
    def parse(cls, apdu: bytes) -> _Command:
        if len(apdu) < 4:
            raise SwError(0x6700)
        cla, ins, p1, p2 = apdu[:4]
        if len(apdu) == 4:
            return cls(cla, ins, p1, p2, b"", None)
        if len(apdu) == 5:
            return cls(cla, ins, p1, p2, b"", apdu[4] or 256)
        lc = apdu[4]
        rest = len(apdu) - 5 - lc
        if lc == 0 or rest not in (0, 1):
            raise SwError(0x6700)  # extended lengths are not supported
        le = (apdu[-1] or 256) if rest == 1 else None
        return cls(cla, ins, p1, p2, bytes(apdu[5 : 5 + lc]), le)


class SoftUicc:
    """A UICC in software: ``process(apdu) -> data || SW1 SW2``.

    ``sqn_state_path``: a file keeping the highest accepted SQN across lab runs (the lab
    HSS issues subscriber.sqn+1 onwards, so a card restarted from the subscriber file
    alone would accept an already used SQN once; with the file it does not).
    ``sfi=False``: a card without short file identifiers: READ/UPDATE BINARY and READ RECORD
    that name an SFI answer ``sfi_refusal_sw`` (6A86 unless set), FCPs carry ``88 00``.
    """

    def __init__(
        self,
        subscriber: Subscriber,
        *,
        t0: bool = True,
        sqn_state_path: str | Path | None = None,
        sfi: bool = True,
        max_channels: int = MAX_CHANNELS,
    ) -> None:
        if not 1 <= max_channels <= 20:
            raise ConfigError("config.invalid", "max_channels must be 1..20", key="max_channels")
        self.subscriber = subscriber
        #: logical channels, the basic one included (MANAGE CHANNEL open fails with 6A81 beyond)
        self.max_channels = max_channels
        self.t0 = t0
        self.sfi = sfi
        self.sfi_refusal_sw = 0x6A86
        self.atr = build_atr(t0, max_channels)
        self._kernel: Milenage | None = None  # made at the first AUTHENTICATE (loads AES)
        self.mf, self.adfs = build_mf(subscriber)
        self._sqn_path = Path(sqn_state_path) if sqn_state_path else None
        self._sqn = max(subscriber.sqn, self._load_sqn())
        self._lock = threading.RLock()
        self._channels: dict[int, _Channel] = {}
        self._injected: list[bytes] = []
        self._gba_rand: bytes | None = None
        self._gba_ks: Secret | None = None
        self._ks_int_naf: dict[bytes, Secret] = {}
        self.muted = False
        self.removed = False
        self.commands = 0  # commands processed since creation
        #: PIN1 (None: the subscriber file gives none, the card has no PIN enabled)
        self.pin1: SoftPin | None = self._make_pin(subscriber)
        #: EFs of the ADFs: reading or updating them needs PIN1 (MF files are ALW)
        self._pin_files = {id(ef) for adf in self.adfs for ef in adf.files.values()}
        self.reset()

    def __repr__(self) -> str:
        return f"<SoftUicc impi={self.subscriber.impi!r} t0={self.t0} isim={self.subscriber.isim}>"

    # --- lifecycle and fault hooks -----------------------------------------------------
    def reset(self) -> bytes:
        """Cold/warm reset: close logical channels, select the MF on channel 0; return the ATR."""
        with self._lock:
            self._channels = {0: _Channel(df=self.mf)}
            if self.pin1 is not None:
                self.pin1.reset()
        return self.atr

    def inject_sw(self, sw: int, count: int = 1) -> None:
        """The next ``count`` commands answer ``sw`` (no data) without being executed."""
        self.inject_response(sw.to_bytes(2, "big"), count)

    def inject_response(self, raw: bytes, count: int = 1) -> None:
        """The next ``count`` commands answer exactly ``raw`` (data || SW, or anything malformed)."""
        with self._lock:
            self._injected.extend([bytes(raw)] * count)

    def mute(self) -> None:
        """The card stops answering: ``process`` returns b"" (transports report no answer)."""
        self.muted = True

    def unmute(self) -> None:
        self.muted = False

    def remove(self) -> None:
        """The card is pulled: ``process`` returns b""; transports raise ``card.removed``."""
        self.removed = True

    def insert(self) -> bytes:
        """The card is back (fresh power-up): returns the ATR."""
        self.removed = False
        self.muted = False
        return self.reset()

    def clear_faults(self) -> None:
        """Drop injected answers that were not consumed."""
        with self._lock:
            self._injected.clear()

    @property
    def open_channels(self) -> list[int]:
        """Logical channel numbers currently open (0 is always open)."""
        return sorted(self._channels)

    def channel_application(self, channel: int) -> bytes | None:
        """The AID of the application selected on ``channel`` (None: none, or not open)."""
        ch = self._channels.get(channel)
        return ch.app.aid if ch is not None and ch.app is not None else None

    @property
    def highest_sqn(self) -> int:
        """The highest SQN the card has accepted (SQN_MS)."""
        return self._sqn

    # --- the command interpreter -------------------------------------------------------
    def process(self, apdu: bytes) -> bytes:
        """One command APDU (T=0 TPDU or short APDU) in, ``data || SW1 SW2`` out."""
        with self._lock:
            if self.muted or self.removed:
                return b""
            self.commands += 1
            if self._injected:
                return self._injected.pop(0)
            try:
                cmd = _Command.parse(bytes(apdu))
                ch_no, proprietary = self._decode_cla(cmd.cla)
                if cmd.ins not in _ISO_INS | _PROPRIETARY_INS:
                    raise SwError(0x6D00)
                if proprietary != (cmd.ins in _PROPRIETARY_INS):
                    raise SwError(0x6E00)
                ch = self._channels.get(ch_no)
                if ch is None:
                    raise SwError(0x6881)
                if cmd.ins != INS_GET_RESPONSE:
                    ch.pending = b""
                return self._dispatch(ch_no, ch, cmd)
            except SwError as exc:
                return exc.sw.to_bytes(2, "big")

    @staticmethod
    def _decode_cla(cla: int) -> tuple[int, bool]:
        """(logical channel, TS 102 221 class) from CLA (TS 102 221 10.1.1)."""
        if cla & 0x40:  # further interindustry / proprietary: channels 4..19
            if cla & 0x20:
                raise SwError(0x6882)  # secure messaging
            if cla & 0x10:
                raise SwError(0x6884)  # command chaining
            return 4 + (cla & 0x0F), bool(cla & 0x80)
        if cla & 0xF0 not in (0x00, 0x80):
            raise SwError(0x6E00)  # incl. A0 (GSM)
        if cla & 0x0C:
            raise SwError(0x6882)
        return cla & 0x03, bool(cla & 0x80)

    def _dispatch(self, ch_no: int, ch: _Channel, cmd: _Command) -> bytes:
        handler = {
            INS_SELECT: self._select,
            INS_READ_BINARY: self._read_binary,
            INS_READ_RECORD: self._read_record,
            INS_UPDATE_BINARY: self._update_binary,
            INS_GET_RESPONSE: self._get_response,
            INS_STATUS: self._status,
            INS_AUTHENTICATE: self._authenticate,
        }.get(cmd.ins)
        if cmd.ins == INS_MANAGE_CHANNEL:
            return self._manage_channel(ch_no, ch, cmd)
        if cmd.ins in PIN_INS:
            return self._pin_command(cmd)
        assert handler is not None
        return handler(ch, cmd)

    # --- response helpers ---------------------------------------------------------------
    def _case4(self, ch: _Channel, data: bytes, le: int | None) -> bytes:
        """Answer of a command with data in and out: T=0 always 61xx; T=1 data up to Le."""
        if not data:
            return b"\x90\x00"
        if self.t0 or le is None:
            ch.pending = data
            return bytes([0x61, min(len(data), 256) & 0xFF])
        return self._deliver(ch, data, le)

    def _deliver(self, ch: _Channel, data: bytes, le: int) -> bytes:
        part, rest = data[:le], data[le:]
        ch.pending = rest
        if rest:
            return part + bytes([0x61, min(len(rest), 256) & 0xFF])
        return part + b"\x90\x00"

    def _case2(self, data: bytes, le: int | None) -> bytes:
        """Answer of a command with data out only (P3 = Le): exact Le or 6Cxx."""
        if le is None or le == 256 and len(data) < 256:
            if self.t0 or le is None:
                raise SwError(0x6C00 | len(data))
            return data + b"\x90\x00"
        if le > len(data):
            raise SwError(0x6C00 | len(data))
        return data[:le] + b"\x90\x00"

    # --- SELECT -------------------------------------------------------------------------
    def _select(self, ch: _Channel, cmd: _Command) -> bytes:
        if cmd.p2 not in (0x04, 0x0C):
            raise SwError(0x6A86)
        if cmd.p1 == 0x04:
            target: Df | Ef = self._select_aid(cmd.data)
        elif cmd.p1 == 0x00:
            target = self.mf if not cmd.data else self._child(ch, self._fid(cmd.data))
        elif cmd.p1 in (0x08, 0x09):
            target = self._select_path(ch, cmd.data, from_mf=cmd.p1 == 0x08)
        else:
            raise SwError(0x6A86)
        if isinstance(target, Df):
            ch.df, ch.ef, ch.record = target, None, 0
            if target.aid is not None:
                ch.app = target  # selecting the MF keeps the current application (TS 102 221 8.4)
        else:  # an EF: its parent becomes the current DF (SFIs then name that DF's EFs)
            ch.df, ch.ef, ch.record = self._parent(ch, target), target, 0
        if cmd.p2 == 0x0C:
            return b"\x90\x00"
        fcp = target.fcp() if isinstance(target, Df) else target.fcp(sfi_supported=self.sfi)
        return self._case4(ch, fcp, cmd.le)

    @staticmethod
    def _fid(data: bytes) -> int:
        if len(data) != 2:
            raise SwError(0x6700)
        return int.from_bytes(data, "big")

    def _select_aid(self, aid: bytes) -> Df:
        if not 1 <= len(aid) <= 16:
            raise SwError(0x6700)
        for adf in self.adfs:
            if adf.aid is not None and adf.aid.startswith(aid):
                return adf
        raise SwError(0x6A82)

    def _child(self, ch: _Channel, fid: int, df: Df | None = None) -> Df | Ef:
        """A FID seen from the current DF: itself, the MF, 7FFF, its EFs, then the MF's EFs."""
        here = df or ch.df
        if fid == 0x3F00:
            return self.mf
        if fid == 0x7FFF:
            if ch.app is None:
                raise SwError(0x6A82)
            return ch.app
        if fid == here.fid:
            return here
        for d in (here, self.mf):
            if fid in d.files:
                return d.files[fid]
        raise SwError(0x6A82)

    def _parent(self, ch: _Channel, ef: Ef) -> Df:
        for df in (ch.df, ch.app, self.mf, *self.adfs):
            if df is not None and df.files.get(ef.fid) is ef:
                return df
        raise AssertionError("an EF outside the file system")

    def _select_path(self, ch: _Channel, data: bytes, from_mf: bool) -> Df | Ef:
        if not data or len(data) % 2:
            raise SwError(0x6700)
        fids = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
        node: Df | Ef = self.mf if from_mf else ch.df
        for fid in fids:
            if not isinstance(node, Df):
                raise SwError(0x6A82)
            node = self._child(ch, fid, node)
        return node

    # --- READ / UPDATE ------------------------------------------------------------------
    def _ef_for(self, ch: _Channel, sfi: int | None) -> Ef:
        """The EF a command addresses: by SFI in the current DF (it becomes the current EF,
        TS 102 221 8.4.4), or the current EF."""
        if sfi is not None:
            if not self.sfi:
                raise SwError(self.sfi_refusal_sw)
            ef = ch.df.by_sfi(sfi)
            if ef is None:
                raise SwError(0x6A82)
            ch.ef, ch.record = ef, 0
            return ef
        if ch.ef is None:
            raise SwError(0x6986)  # no current EF
        return ch.ef

    @staticmethod
    def _binary_target(cmd: _Command) -> tuple[int | None, int]:
        """(SFI or None, offset) of READ/UPDATE BINARY (TS 102 221 11.1.3.2, 11.1.4.2).

        P1 b8=1: b7 b6 = 00, b5..b1 = SFI (1..30), P2 = offset; else P1 P2 = a 15-bit offset.
        """
        if not cmd.p1 & 0x80:
            return None, (cmd.p1 << 8) | cmd.p2
        sfi = cmd.p1 & 0x1F
        if cmd.p1 & 0x60 or not 1 <= sfi <= 30:
            raise SwError(0x6A86)
        return sfi, cmd.p2

    def _read_binary(self, ch: _Channel, cmd: _Command) -> bytes:
        sfi, offset = self._binary_target(cmd)
        ef = self._ef_for(ch, sfi)
        self._pin_gate(ef)
        if ef.linear:
            raise SwError(0x6981)
        if offset >= ef.size:
            raise SwError(0x6B00)
        avail = bytes(ef.data[offset : offset + 256])
        return self._case2(avail, cmd.le)

    def _read_record(self, ch: _Channel, cmd: _Command) -> bytes:
        mode, sfi = cmd.p2 & 0x07, cmd.p2 >> 3  # P2 b8..b4: SFI (0: current EF, 31: RFU)
        if sfi == 0x1F:
            raise SwError(0x6A86)
        ef = self._ef_for(ch, sfi or None)
        self._pin_gate(ef)
        if not ef.linear or ef.records is None:
            raise SwError(0x6981)
        if mode == 0x04:
            number = cmd.p1 or ch.record
        elif mode in (0x02, 0x03) and cmd.p1 == 0:
            number = ch.record + 1 if mode == 0x02 else (ch.record - 1 if ch.record else len(ef.records))
        else:
            raise SwError(0x6A86)
        if not 1 <= number <= len(ef.records):
            raise SwError(0x6A83)
        out = self._case2(bytes(ef.records[number - 1]), cmd.le)
        ch.record = number
        return out

    def _update_binary(self, ch: _Channel, cmd: _Command) -> bytes:
        sfi, offset = self._binary_target(cmd)
        ef = self._ef_for(ch, sfi)
        self._pin_gate(ef)
        if ef.linear:
            raise SwError(0x6981)
        if not ef.writable:
            raise SwError(0x6982)
        if not cmd.data:
            raise SwError(0x6700)
        if offset >= ef.size:
            raise SwError(0x6B00)
        if offset + len(cmd.data) > ef.size:
            raise SwError(0x6700)
        ef.data[offset : offset + len(cmd.data)] = cmd.data
        return b"\x90\x00"

    def _get_response(self, ch: _Channel, cmd: _Command) -> bytes:
        if cmd.p1 or cmd.p2:
            raise SwError(0x6A86)
        if not ch.pending:
            raise SwError(0x6985)
        le = cmd.le or 256
        if le == 256 and len(ch.pending) < 256 and self.t0 or le != 256 and le > len(ch.pending):
            raise SwError(0x6C00 | len(ch.pending))
        return self._deliver(ch, ch.pending, le)

    def _status(self, ch: _Channel, cmd: _Command) -> bytes:
        if cmd.p1 not in (0x00, 0x01, 0x02) or cmd.p2 not in (0x00, 0x01, 0x0C):
            raise SwError(0x6A86)
        if cmd.p2 == 0x0C:
            return b"\x90\x00"
        current = ch.app or ch.df
        data = current.fcp() if cmd.p2 == 0x00 else tlv(0x84, current.aid or b"")
        return self._case2(data, cmd.le)

    # --- MANAGE CHANNEL -----------------------------------------------------------------
    def _manage_channel(self, ch_no: int, ch: _Channel, cmd: _Command) -> bytes:
        if cmd.p1 == 0x80:  # close channel P2
            if cmd.p2 == 0 or cmd.p2 > 19:
                raise SwError(0x6A86)
            if cmd.p2 not in self._channels:
                raise SwError(0x6A88)
            del self._channels[cmd.p2]
            return b"\x90\x00"
        if cmd.p1 != 0x00:
            raise SwError(0x6A86)
        if cmd.p2 == 0:
            free = [n for n in range(1, self.max_channels) if n not in self._channels]
            if not free:
                raise SwError(0x6A81)
            number = free[0]
        else:
            number = cmd.p2
            if number >= self.max_channels or number in self._channels:
                raise SwError(0x6A86)
        # the answer (and its Le check) comes before the channel opens
        out = self._case2(bytes([number]), cmd.le) if cmd.p2 == 0 else b"\x90\x00"
        # opened from channel 0: the MF; from another channel: that channel's selection
        self._channels[number] = (
            _Channel(df=self.mf) if ch_no == 0 else _Channel(df=ch.df, app=ch.app, ef=ch.ef)
        )
        return out

    # --- AUTHENTICATE -------------------------------------------------------------------
    def _authenticate(self, ch: _Channel, cmd: _Command) -> bytes:
        if cmd.p1 != 0x00:
            raise SwError(0x6A86)
        app = ch.app
        if app is None:
            raise SwError(0x6985)  # no application selected on this channel
        contexts = {0x80: "gsm", 0x81: "3g", 0x82: "digest", 0x84: "gba"}
        context = contexts.get(cmd.p2)
        if context is None:
            raise SwError(0x6A86)
        is_isim = app.aid == ISIM_AID
        offered = {"3g"} | ({"gsm"} if 27 in UST_SERVICES else set())
        if is_isim:
            offered = {"3g"} | ({"gba"} if 2 in isim_services(self.subscriber) else set())
        if context not in offered:
            raise SwError(0x9864)
        self._pin_gate(None)  # AUTHENTICATE needs PIN1 (TS 31.102 7.1.2.1, TS 31.103 7.1.2.1)
        if context == "gsm":
            return self._case4(ch, self._gsm(cmd.data), cmd.le)
        if context == "3g":
            with_kc = app.aid == USIM_AID and 27 in UST_SERVICES
            return self._case4(ch, self._aka_3g(cmd.data, with_kc), cmd.le)
        if cmd.data[:1] == b"\xdd":
            return self._case4(ch, self._gba_bootstrap(cmd.data), cmd.le)
        if cmd.data[:1] == b"\xde":
            return self._case4(ch, self._gba_naf(app, cmd.data), cmd.le)
        raise SwError(0x6A80)

    @staticmethod
    def _lv(data: bytes, count: int) -> list[bytes]:
        """``count`` length-value fields that must fill ``data`` exactly."""
        out, i = [], 0
        for _ in range(count):
            if i >= len(data) or i + 1 + data[i] > len(data):
                raise SwError(0x6700)
            out.append(data[i + 1 : i + 1 + data[i]])
            i += 1 + data[i]
        if i != len(data):
            raise SwError(0x6700)
        return out

    def _milenage(self) -> Milenage:
        """The card's Milenage, made on first use: a card that is only read never loads the
        AES backend (the daemon on the lab card idles without it)."""
        if self._kernel is None:
            self._kernel = Milenage(self.subscriber.k.reveal(), self.subscriber.opc.reveal())
        return self._kernel

    def _gsm(self, data: bytes) -> bytes:
        (rand,) = self._lv(data, 1)
        if len(rand) != 16:
            raise SwError(0x6A80)
        res, ck, ik, _, _ = self._milenage().f2345(rand)
        return b"\x04" + gsm_sres(res) + b"\x08" + gsm_kc(ck, ik)

    def _check_aka(self, rand: bytes, autn: bytes) -> tuple[bytes, bytes, bytes] | bytes:
        """(RES, CK, IK) when AUTN verifies and SQN is fresh; AUTS on a stale SQN; 9862 on MAC."""
        if len(rand) != 16 or len(autn) != 16:
            raise SwError(0x6A80)
        milenage = self._milenage()
        res, ck, ik, ak, _ = milenage.f2345(rand)
        sqn = _xor(autn[:6], ak)
        xmac, _ = milenage.f1(rand, sqn, autn[6:8])
        if not hmac.compare_digest(xmac, autn[8:]):
            raise SwError(0x9862)
        if int.from_bytes(sqn, "big") <= self._sqn:
            return milenage.auts(rand, self._sqn.to_bytes(6, "big"))
        self._sqn = int.from_bytes(sqn, "big")
        self._store_sqn()
        return res, ck, ik

    def _aka_3g(self, data: bytes, with_kc: bool) -> bytes:
        rand, autn = self._lv(data, 2)
        out = self._check_aka(rand, autn)
        if isinstance(out, bytes):
            return b"\xdc\x0e" + out
        res, ck, ik = out
        answer = b"\xdb" + bytes([len(res)]) + res + b"\x10" + ck + b"\x10" + ik
        return answer + (b"\x08" + gsm_kc(ck, ik) if with_kc else b"")

    def _gba_bootstrap(self, data: bytes) -> bytes:
        rand, autn = self._lv(data[1:], 2)
        out = self._check_aka(rand, autn)
        if isinstance(out, bytes):
            return b"\xdc\x0e" + out
        res, ck, ik = out
        if self._gba_ks is not None:
            self._gba_ks.zeroize()
        for key in self._ks_int_naf.values():
            key.zeroize()
        self._ks_int_naf.clear()
        self._gba_rand, self._gba_ks = rand, Secret(ck + ik, "Ks")
        return b"\xdb" + bytes([len(res)]) + res

    def _gba_naf(self, app: Df, data: bytes) -> bytes:
        naf_id, impi = self._lv(data[1:], 2)
        if not naf_id or not impi:
            raise SwError(0x6A80)
        btid = self._bootstrap_btid(app)
        if self._gba_ks is None or self._gba_rand is None or btid is None:
            raise SwError(0x6985)  # no bootstrapped Ks, or EF_GBABP not for this RAND
        ks, rand, impi_s = self._gba_ks.reveal(), self._gba_rand, impi.decode("utf-8", "replace")
        ext = ks_naf(ks, rand, impi_s, naf_id)
        old = self._ks_int_naf.pop(naf_id, None)
        if old is not None:
            old.zeroize()
        self._ks_int_naf[naf_id] = Secret(ks_int_naf(ks, rand, impi_s, naf_id), "Ks_int_NAF")
        self._record_gbanl(app, naf_id, btid)
        return b"\xdb" + bytes([len(ext)]) + ext

    def _bootstrap_btid(self, app: Df) -> bytes | None:
        """The B-TID in EF_GBABP when its RAND is the bootstrapped one."""
        data = bytes(app.files[catalogue.FID_ISIM_GBABP].data)
        fields, i = [], 0
        for _ in range(2):  # LV RAND, LV B-TID (then LV key lifetime, not needed here)
            if i >= len(data) or i + 1 + data[i] > len(data):
                return None
            fields.append(data[i + 1 : i + 1 + data[i]])
            i += 1 + data[i]
        rand, btid = fields
        return btid if rand == self._gba_rand and btid else None

    def _record_gbanl(self, app: Df, naf_id: bytes, btid: bytes) -> None:
        ef = app.files[catalogue.FID_ISIM_GBANL]
        assert ef.records is not None
        body = tlv(0x80, naf_id) + tlv(0x81, btid)
        if len(body) > ef.record_len:
            raise SwError(0x6A84)
        target = next((r for r in ef.records if r[2 : 2 + r[1]] == naf_id and r[0] == 0x80), None)
        target = target or next((r for r in ef.records if r[0] == 0xFF), ef.records[0])
        target[:] = pad(body, ef.record_len)

    # --- PIN1 (ue_agent.lab.uicc_pin) -------------------------------------------------------
    @staticmethod
    def _make_pin(sub: Subscriber) -> SoftPin | None:
        if sub.pin1 is None or sub.puk1 is None:
            return None
        pin = SoftPin(
            sub.pin1.reveal().decode("ascii"),
            sub.puk1.reveal().decode("ascii"),
            enabled=sub.pin1_enabled,
            tries=sub.pin1_tries,
            puk_tries=sub.puk1_tries,
        )
        return pin

    def _pin_command(self, cmd: _Command) -> bytes:
        if self.pin1 is None:  # no PIN1 on this card: nothing to verify, key reference unknown
            if cmd.ins == 0x20 and not cmd.data and cmd.p2 == 0x01:
                return b"\x90\x00"
            raise SwError(0x6A88)
        return self.pin1.command(cmd.ins, cmd.p1, cmd.p2, cmd.data).to_bytes(2, "big")

    def _pin_gate(self, ef: Ef | None) -> None:
        """6982 when ``ef`` (None: AUTHENTICATE) needs PIN1 and it is not verified."""
        if self.pin1 is None or (ef is not None and id(ef) not in self._pin_files):
            return
        try:
            self.pin1.require()
        except PinSw as exc:
            raise SwError(exc.sw) from None

    def held_ks_int_naf(self, naf_id: bytes) -> Secret | None:
        """Lab/test view of the Ks_int_NAF the card holds for ``naf_id`` (never sent out)."""
        return self._ks_int_naf.get(naf_id)

    # --- SQN state ----------------------------------------------------------------------
    def _load_sqn(self) -> int:
        if self._sqn_path is None or not self._sqn_path.exists():
            return 0
        text = self._sqn_path.read_text().strip()
        if not text.isdigit() or int(text) >= 2**48:
            raise ConfigError("config.invalid", f"{self._sqn_path}: not an SQN", path=str(self._sqn_path))
        return int(text)

    def _store_sqn(self) -> None:
        if self._sqn_path is None:
            return
        tmp = self._sqn_path.with_name(self._sqn_path.name + ".tmp")
        tmp.write_text(f"{self._sqn}\n")
        os.replace(tmp, self._sqn_path)


class SoftUiccTransport(ApduTransport):
    """The in-process transport to a :class:`SoftUicc`; counts the APDUs it carries."""

    name = "lab:soft-uicc"

    def __init__(self, uicc: SoftUicc, *, use_logical_channel: bool = False) -> None:
        self.uicc = uicc
        self.use_logical_channel = use_logical_channel
        self.apdu_count = 0
        self._closed = False

    def transmit(self, apdu: bytes) -> bytes:
        if self._closed:
            raise TransportError("card.transport_closed", "the soft UICC transport is closed")
        if self.uicc.removed:
            raise TransportError("card.removed", "the card was removed")
        self.apdu_count += 1
        raw = self.uicc.process(apdu)
        if not raw:
            raise TransportError("card.no_response", "the card did not answer")
        return raw

    def close(self) -> None:
        self._closed = True
