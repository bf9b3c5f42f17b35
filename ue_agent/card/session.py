"""The card facade: identities, AKA and GBA_U over one :class:`ApduTransport`.

Application selection follows the card tools (field notes 5.2): read EF_DIR, prefer the
ISIM (AID prefix A0000000871004), fall back to the USIM (A0000000871002) and then derive
the IMS identities from the IMSI. The ISIM goes on

- the basic channel (``transport.mode == "basic"``),
- a logical channel opened with MANAGE CHANNEL (``transport.use_logical_channel``), or
- the transport's own bound channel (``transport.mode == "bound"``, AT+CCHO), where
  the application is already selected and must not be selected again.

Round trips are kept to the minimum (each APDU over AT+CSIM costs tens of milliseconds):
EF_DIR is read once and only up to the ISIM's record, identities are cached until
:meth:`Card.refresh`, the application is selected once; transparent EFs that have a short
file identifier are read by SFI with no SELECT (the whole EF with Le=00, or the bytes the
spec fixes), the others after a SELECT with the size from their FCP. A card that refuses
SFI reads is remembered and read by path from then on. Every status word that is not an
outcome becomes a ``CardError`` (see :mod:`ue_agent.card.sw`).

Resets. A UICC reset closes every logical channel and forgets every selection (TS 102 221
11.1.17: channels other than the basic one exist only from MANAGE CHANNEL open to close or
reset). The facade notices one by the transport's :attr:`~ApduTransport.epoch` (the modem
printed RDY / +CPIN: READY, the port came back) or by SW 6881 / 6A81 on the application's
channel after it worked. A reset seen before an operation is handled transparently: the
application is found, its channel opened and selected again. A reset met during an
operation is handled the same way when the failing command provably never ran (not sent to
the restarted modem, a +CGLA session the modem forgot, 6881/6A81 from the card); otherwise
(e.g. a timeout around the reset: an AUTHENTICATE may have run and its answer be lost) the
operation fails with ``card.reset`` and the next one reopens the channel.
:attr:`Card.resets` counts them.

Channel lifecycle. :meth:`Card.close` closes the channel this facade opened. Channels it
opens are noted in ``transport.channel_record`` (``"mc:<n>"``) so that after a crash the
next agent closes them (:meth:`Card.reclaim`) instead of leaking one per restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from ue_agent.card import auth, ef, pin
from ue_agent.card.apdu import Apdu, ApduLink, Response, cla_for_channel
from ue_agent.card.pin import PinStatus
from ue_agent.card.results import (
    AkaMacFailure,
    AkaOutcome,
    AkaSyncFailure,
    CardIdentities,
    GbaBootstrapRes,
)
from ue_agent.card.sw import sw_error
from ue_agent.card.transport import ApduTransport
from ue_agent.errors import CardError
from ue_agent.secret import Secret

INS_SELECT, INS_READ_BINARY, INS_READ_RECORD, INS_UPDATE_BINARY = 0xA4, 0xB0, 0xB2, 0xD6
INS_MANAGE_CHANNEL, INS_AUTHENTICATE = 0x70, 0x88
P2_FCP, P2_NO_DATA = 0x04, 0x0C
SW_MAC_FAILURE = 0x9862
SW_END_OF_FILE = 0x6282  # data returned, end of the EF reached before Le bytes
#: answers by which a card refuses READ BINARY by SFI (or its Le=00): function or file not
#: found, wrong P1/P2 or length, wrong structure, no current EF, INS unknown. The EF is then
#: selected by path instead.
SFI_REFUSED = frozenset({0x6700, 0x6981, 0x6986, 0x6A81, 0x6A82, 0x6A86, 0x6B00, 0x6D00})
MAX_TRANSPARENT = 0x7FFF  # READ BINARY offsets are 15 bits

log = logging.getLogger(__name__)
T = TypeVar("T")


def _not_run(exc: CardError) -> bool:
    """Whether a failure met at a reset proves the command never ran on the card."""
    return exc.code == "modem.reopened" or str(exc.details.get("sw", "")).upper() in ("6881", "6A81")


class Card:
    """One UICC. Blocking; the daemon calls it from its card worker thread only."""

    def __init__(self, transport: ApduTransport) -> None:
        self.transport = transport
        self._link = ApduLink(transport)
        self._app_transport: ApduTransport | None = None  # bound mode
        self._app_link: ApduLink | None = None
        self._app_channel = 0
        self._aids: list[bytes] | None = None
        self._aid: bytes | None = None
        self._application: str | None = None  # "isim" or "usim"
        self._identities: CardIdentities | None = None
        self._retired_count = 0  # APDUs carried by bound links already released
        self._closed = False
        #: SFI reads on this card: None untried, True worked once, False refused before any
        #: worked (then every EF is selected by path; kept across refresh(): same card)
        self._sfi: bool | None = None
        #: what this facade last made the current DF on the basic channel: "mf" (after a
        #: SELECT by path from the MF), "app" (after selecting the application there) or None
        self._basic_df: str | None = None
        #: EF_GBABP, valid for one card session (see _forget_gbabp)
        self._gbabp_size: int | None = None
        self._gbabp_selected: tuple[ApduLink, int] | None = None
        self._gbabp_written: bytes | None = None
        #: the transport's epoch when the selection state above was built
        self._epoch = transport.epoch
        #: an operation completed on the application's channel since it was opened
        self._app_worked = False
        #: card resets noticed (before or during an operation)
        self.resets = 0

    def __repr__(self) -> str:
        return f"<Card {self.transport.name} app={self._application}>"

    @property
    def apdu_count(self) -> int:
        """APDUs sent to the card by this facade (GET RESPONSE and 6Cxx resends included)."""
        own = self._app_link if self._app_link is not self._link else None
        return self._link.count + (own.count if own is not None else 0) + self._retired_count

    # --- public operations -------------------------------------------------------------
    def identities(self) -> CardIdentities:
        if self._identities is None:
            self._identities = self._guard("reading the identities", self._read_identities)
        return self._identities

    def refresh(self) -> None:
        """Forget the cached identities and selection (after a card reset or REFRESH)."""
        self._release_application()
        self._forget_read()

    def authenticate(self, rand: bytes, autn: bytes) -> AkaOutcome:
        """IMS AKA on the ISIM, or the 3G context on the USIM when there is no ISIM."""
        data = auth.aka_command_data(rand, autn)

        def run() -> AkaOutcome:
            return self._challenge(auth.P2_3G, data, "AUTHENTICATE (AKA)", auth.parse_aka_response)

        return self._guard("AUTHENTICATE", run)

    def gba_bootstrap(self, rand: bytes, autn: bytes) -> GbaBootstrapRes | AkaMacFailure | AkaSyncFailure:
        """GBA_U bootstrapping: the card keeps Ks = CK || IK and answers RES only."""
        data = auth.gba_bootstrap_data(rand, autn)

        def run() -> GbaBootstrapRes | AkaMacFailure | AkaSyncFailure:
            self._require_gba_u()
            return self._challenge(
                auth.P2_GBA, data, "AUTHENTICATE (GBA bootstrapping)", auth.parse_gba_bootstrap_response
            )

        return self._guard("AUTHENTICATE (GBA)", run)

    def _challenge(self, p2: int, data: bytes, what: str, parse: Callable[[bytes], T]) -> T | AkaMacFailure:
        """AUTHENTICATE with a RAND/AUTN challenge: 9862 is the card's MAC failure (an outcome,
        not an error); otherwise the answer must be 9000 and ``parse`` reads it (RES, or DC+AUTS)."""
        resp = self._app_send(INS_AUTHENTICATE, 0x00, p2, data, le=256)
        if resp.sw == SW_MAC_FAILURE:
            return AkaMacFailure()
        self._expect_ok(resp, what)
        return parse(resp.data)

    def gba_naf_derive(self, naf_id: bytes, impi: str) -> Secret:
        """Ks_ext_NAF for ``naf_id`` (FQDN || Ua protocol id); the card keeps Ks_int_NAF."""
        data = auth.gba_naf_data(naf_id, impi)

        def run() -> Secret:
            self._require_gba_u()
            resp = self._app_send(INS_AUTHENTICATE, 0x00, auth.P2_GBA, data, le=256)
            self._expect_ok(resp, "AUTHENTICATE (GBA NAF derivation)", {0x6985: "card.gba_not_bootstrapped"})
            return auth.parse_gba_naf_response(resp.data)

        return self._guard("AUTHENTICATE (GBA NAF)", run)

    def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str | datetime) -> None:
        """Write RAND, B-TID and the key lifetime to EF_GBABP after a GBA_U bootstrap."""
        if isinstance(lifetime, datetime):
            lifetime = lifetime.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(rand) != 16 or not btid:
            raise CardError("card.invalid_argument", "RAND must be 16 bytes and B-TID non-empty")
        self._guard("UPDATE BINARY EF_GBABP", lambda: self._store_gbabp(rand, btid, lifetime))

    def _store_gbabp(self, rand: bytes, btid: str, lifetime: str) -> None:
        self._require_gba_u()
        try:
            body = ef.encode_gbabp(bytes(rand), btid, lifetime)
        except ValueError as exc:
            raise CardError("card.invalid_argument", str(exc)) from None
        if body == self._gbabp_written:
            return  # the card already holds exactly this
        try:
            self._write_gbabp(body, reuse_selection=True)
        except CardError as exc:
            if self._gbabp_selected is None or exc.code == "modem.reopened":
                raise  # nothing assumed, or a reset: _guard deals with it
            # the EF we thought current was not (a reset we were not told of?): select it again
            self._gbabp_selected = None
            self._write_gbabp(body, reuse_selection=False)

    def _write_gbabp(self, body: bytes, reuse_selection: bool) -> None:
        """UPDATE BINARY of EF_GBABP: its FCP is read once per card, the SELECT is skipped while
        it is still the current EF (nothing selected since), and only the bytes that can differ
        from the last write are sent (the rest already holds the 'FF' padding)."""
        link, _ = self._open_application()
        selected = self._gbabp_selected
        current = reuse_selection and selected == (link, link.selection_epoch)
        if not (current and self._gbabp_size is not None):
            self._gbabp_selected = None
            if self._gbabp_size is None:
                fcp = ef.decode_fcp(self._select_app_ef(ef.FID_ISIM_GBABP, "EF_GBABP").data)
                self._gbabp_size = fcp.size or 0
            else:
                self._select_app_ef(ef.FID_ISIM_GBABP, "EF_GBABP", P2_NO_DATA)
            self._gbabp_selected = (link, link.selection_epoch)
        size = self._gbabp_size
        assert size is not None
        if len(body) > size:
            raise CardError(
                "card.data_too_long", f"EF_GBABP holds {size} bytes, bootstrap data needs {len(body)}"
            )
        prev = self._gbabp_written
        end = size if prev is None else max(len(body), len(prev))
        data = body + b"\xff" * (end - len(body))
        self._gbabp_written = None  # unknown until every chunk is written
        for off in range(0, end, 255):
            chunk = data[off : off + 255]
            resp = self._app_send(INS_UPDATE_BINARY, off >> 8, off & 0xFF, chunk)
            self._expect_ok(resp, "UPDATE BINARY EF_GBABP")
        self._gbabp_written = body

    def _forget_gbabp(self) -> None:
        """EF_GBABP facts valid for one card session: its size (FCP), whether it is the current
        EF (link, selection epoch) and what this facade last wrote there."""
        self._gbabp_size = None
        self._gbabp_selected = None
        self._gbabp_written = None

    def check(self) -> bool:
        """After the transport signalled a reset: notice it now and, when an application was
        in use, find it, open its channel and select it again, so that the next operation
        does not pay for it. True when a reset was noticed."""
        before = self.resets
        self._guard("reopening after a reset", lambda: None)
        if self.resets != before:
            self._guard("reopening after a reset", self._open_application)
        return self.resets != before

    def reclaim(self, keys: list[str]) -> list[str]:
        """Close channels a predecessor left open (keys from its channel record); returns the
        keys dealt with (closed, or found closed already).

        ``"mc:<n>"``: MANAGE CHANNEL close, P1 '80', P2 = n, sent on the basic channel (TS 102
        221 11.1.17: any channel but the basic one can be closed so; the card then reuses the
        number). Only channels recorded as ours are closed: others may belong to the modem's own
        IMS stack or another PC/SC client. Other keys go to the transport (AT+CCHC).
        """
        done: list[str] = []
        for key in keys:
            kind, _, value = key.partition(":")
            if kind == "mc" and value.isdigit() and 1 <= int(value) <= 19:
                resp = self._link.send(Apdu(0x00, INS_MANAGE_CHANNEL, 0x80, int(value)))
                # 6A88/6881/6A86: not open any more (the card was reset since): nothing to close
                if resp.ok or resp.sw in (0x6A88, 0x6881, 0x6A86, 0x6A81):
                    done.append(key)
                else:
                    log.warning("closing leftover channel %s: card answered %04X", value, resp.sw)
            elif self.transport.reclaim(key):
                done.append(key)
        return done

    def pin_status(self) -> PinStatus:
        """PIN1's state from VERIFY without data on the basic channel (TS 102 221 11.1.9)."""
        return pin.status_from_sw(self._link.send(pin.verify_apdu()).sw)

    def puk_retries(self) -> int | None:
        """The PUK tries left (UNBLOCK PIN without data); None when the card does not say."""
        return pin.puk_retries_from_sw(self._link.send(pin.unblock_query_apdu()).sw)

    def verify_pin(self, value: Secret) -> PinStatus:
        """VERIFY PIN1 with ``value``: ready, or CardError card.pin_wrong / card.pin_blocked.
        The policy (one try left, unknown count) is the caller's: :func:`ue_agent.card.pin.plan_verify`."""
        return pin.verify_result(self._link.send(pin.verify_apdu(value)).sw)

    def close(self) -> None:
        """Close the ISIM's channel (if this facade opened one) and the transport. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release_application()
        finally:
            self.transport.close()

    # --- resets --------------------------------------------------------------------------
    def _guard(self, what: str, fn: Callable[[], T]) -> T:
        """Run one operation: after a reset seen before it, transparently on a fresh channel.

        A reset met during it: when the evidence says the failing command never ran (the
        driver did not send it to the new modem, the modem no longer knew the session, or the
        card answered 6881/6A81: no such channel), the operation runs once more on a fresh
        channel, transparently; otherwise (a timeout around a reset: the card may have run an
        AUTHENTICATE whose answer was lost) it fails with ``card.reset`` and the next
        operation reopens the channel.
        """
        for attempt in (0, 1):
            if self.transport.check_epoch() != self._epoch:
                self._forget_after_reset("the transport saw a reset")
            epoch = self._epoch
            try:
                result = fn()
            except CardError as exc:
                if exc.code == "card.reset" or not self._reset_during(exc, epoch):
                    raise  # card.reset: a nested operation (identities) dealt with it already
                self._forget_after_reset(exc.code)
                if attempt == 0 and _not_run(exc):
                    continue
                raise CardError(
                    "card.reset",
                    f"the card or modem was reset during {what}; the next request reopens the channel",
                    cause=exc.code,
                ) from None
            if self._app_link is not None:
                self._app_worked = True  # a whole operation went through on this channel
            return result
        raise AssertionError("unreachable")

    def _reset_during(self, exc: CardError, epoch: int) -> bool:
        if exc.code == "modem.reopened" or self.transport.epoch != epoch:
            return True
        # 6881 (channel not supported) / 6A81 (function not supported) from the application's
        # own channel after it worked: the card closed it, i.e. it was reset
        on_own_channel = self._app_transport is not None or self._app_channel != 0
        return (
            self._app_worked and on_own_channel and str(exc.details.get("sw", "")).upper() in ("6881", "6A81")
        )

    def _forget_read(self) -> None:
        """Forget what was read from the card and which application is selected."""
        self._aids = None
        self._aid = None
        self._application = None
        self._identities = None
        self._basic_df = None
        self._forget_gbabp()

    def _forget_after_reset(self, why: str) -> None:
        """The card was reset: its channels and selections are gone. Forget them (nothing is
        closed on the card: there is nothing to close) and what was read from it."""
        self.resets += 1
        log.warning("card reset noticed (%s): application channel and selection dropped", why)
        bound, channel = self._app_transport, self._app_channel
        self._retired_count += self._app_link.count if bound is not None and self._app_link else 0
        self._app_link, self._app_channel, self._app_transport = None, 0, None
        self._app_worked = False
        if bound is not None:
            bound.close()  # a CCHO session of an older generation is only forgotten
        elif channel and self.transport.channel_record is not None:
            self.transport.channel_record.discard(f"mc:{channel}")
        self._forget_read()
        self.transport.after_reset()
        self._epoch = self.transport.epoch

    # --- application selection ---------------------------------------------------------
    def _discover(self) -> None:
        """EF_DIR once: pick the ISIM, else the USIM."""
        if self._aid is not None:
            return
        if self._aids is None:
            self._aids = self._read_ef_dir()
        isim = ef.find_aid(self._aids, ef.ISIM_AID_PREFIX)
        usim = ef.find_aid(self._aids, ef.USIM_AID_PREFIX)
        if isim is not None:
            self._aid, self._application = isim, "isim"
        elif usim is not None:
            self._aid, self._application = usim, "usim"
        else:
            raise CardError(
                "card.no_application",
                "EF_DIR lists neither an ISIM nor a USIM",
                aids=[a.hex() for a in self._aids],
            )

    def _read_ef_dir(self) -> list[bytes]:
        """The AIDs in EF_DIR, up to the first ISIM (the one chosen: later records cannot matter).

        EF_DIR is read after a SELECT with its FCP, not by SFI 1E: the FCP gives the record
        length and count, which reading by SFI would cost a 6Cxx (T=0) and a 6A83 to learn.
        """
        fcp = ef.decode_fcp(self._select_mf_ef(ef.FID_EF_DIR, "EF_DIR").data)
        aids = []
        for rec in self._iter_records(self._link, 0x00, fcp, "EF_DIR"):
            aid = ef.decode_dir_record(rec)
            if aid is not None:
                aids.append(aid)
                if aid.startswith(ef.ISIM_AID_PREFIX):
                    break
        return aids

    def _open_application(self) -> tuple[ApduLink, int]:
        """The link and channel the chosen application answers on; selects it once."""
        self._discover()
        assert self._aid is not None
        if self._app_link is not None:
            return self._app_link, self._app_channel
        if self.transport.mode == "bound":
            try:
                bound = self.transport.bind_application(self._aid)
            except NotImplementedError:
                raise CardError("card.transport", "bound transport cannot bind an application") from None
            self._app_transport, self._app_link, self._app_channel = bound, ApduLink(bound), 0
            return self._app_link, 0
        channel = 0
        if self.transport.use_logical_channel:
            resp = self._link.send(Apdu(0x00, INS_MANAGE_CHANNEL, 0x00, 0x00, le=1))
            self._expect_ok(resp, "MANAGE CHANNEL open")
            if len(resp.data) != 1 or not 1 <= resp.data[0] <= 19:
                raise ef.malformed("MANAGE CHANNEL answer")
            channel = resp.data[0]
            if self.transport.channel_record is not None:
                self.transport.channel_record.add(f"mc:{channel}")
        # from here on, this channel is ours; close it again if the SELECT fails
        self._app_link, self._app_channel = self._link, channel
        try:
            resp = self._link.send(
                Apdu(cla_for_channel(0x00, channel), INS_SELECT, 0x04, P2_NO_DATA, self._aid)
            )
            self._expect_ok(resp, f"SELECT {self._application} by AID")
        except Exception:
            self._release_application()
            raise
        if channel == 0:
            self._basic_df = "app"
        return self._link, channel

    def _application_on_adf(self) -> tuple[ApduLink, int]:
        """The application's link and channel with its ADF as the current DF (SFI reads address it).

        Only the basic channel can have been moved away from the ADF (an MF file read there
        after the application was selected); the ADF is then selected again.
        """
        link, channel = self._open_application()
        if link is self._link and channel == 0 and self._basic_df != "app":
            assert self._aid is not None
            resp = link.send(Apdu(0x00, INS_SELECT, 0x04, P2_NO_DATA, self._aid))
            self._expect_ok(resp, f"SELECT {self._application} by AID")
            self._basic_df = "app"
        return link, channel

    def _release_application(self) -> None:
        link, channel, bound = self._app_link, self._app_channel, self._app_transport
        self._app_link, self._app_channel, self._app_transport = None, 0, None
        self._gbabp_selected = None
        self._app_worked = False
        if bound is not None:
            self._retired_count += link.count if link is not None else 0
            bound.close()
        elif channel:
            try:
                self._link.send(Apdu(0x00, INS_MANAGE_CHANNEL, 0x80, channel))
            except CardError as exc:
                log.info("MANAGE CHANNEL close %d: %s", channel, exc.code)
                if exc.code.startswith("modem.") and exc.code != "modem.reopened":
                    return  # not known to be closed: the record keeps it for the next start
            if self.transport.channel_record is not None:
                self.transport.channel_record.discard(f"mc:{channel}")

    def _require_gba_u(self) -> None:
        ids = self.identities()
        if not ids.gba_u:
            raise CardError(
                "card.context_not_supported",
                f"the {ids.application.upper()} does not offer GBA_U (ISIM service 2)",
            )

    # --- commands ----------------------------------------------------------------------
    @staticmethod
    def _expect_ok(resp: Response, doing: str, overrides: dict[int, str] | None = None) -> None:
        if not resp.ok:
            raise sw_error(resp.sw, doing, overrides)

    def _app_send(self, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> Response:
        link, channel = self._open_application()
        return link.send(Apdu(cla_for_channel(0x00, channel), ins, p1, p2, data, le))

    def _select_mf_ef(self, fid: int, name: str, p2: int = P2_FCP) -> Response:
        """SELECT by path from the MF on the basic channel; the MF becomes its current DF."""
        le = 256 if p2 == P2_FCP else None
        resp = self._link.send(Apdu(0x00, INS_SELECT, 0x08, p2, fid.to_bytes(2, "big"), le=le))
        self._expect_ok(resp, f"SELECT {name}")  # a failed SELECT leaves the selection as it was
        self._basic_df = "mf"
        return resp

    def _select_app_ef(self, fid: int, name: str, p2: int = P2_FCP) -> Response:
        """SELECT by path 7FFF/FID (the current application); its ADF becomes the current DF."""
        le = 256 if p2 == P2_FCP else None
        resp = self._app_send(INS_SELECT, 0x08, p2, b"\x7f\xff" + fid.to_bytes(2, "big"), le=le)
        self._expect_ok(resp, f"SELECT {name}")
        if self._app_link is self._link and self._app_channel == 0:
            self._basic_df = "app"
        return resp

    def _read_binary(self, link: ApduLink, cla: int, fcp: ef.Fcp, name: str) -> bytes:
        if fcp.linear:
            raise ef.malformed(f"{name} FCP", reason="expected a transparent EF")
        if fcp.size is None:  # no size in the FCP: let the card say how much (6Cxx)
            return self._read_to_end(link, cla, name)
        out = bytearray()
        for off in range(0, fcp.size, 256):
            n = min(256, fcp.size - off)
            resp = link.send(Apdu(cla, INS_READ_BINARY, off >> 8, off & 0xFF, le=n))
            self._expect_ok(resp, f"READ BINARY {name}")
            if len(resp.data) != n:
                raise ef.malformed(name, reason=f"asked {n} bytes, got {len(resp.data)}")
            out += resp.data
        return bytes(out)

    def _check_read(self, resp: Response, le: int, name: str) -> bytes:
        """A READ BINARY answer: 1..Le bytes with 9000, or the bytes up to the end of the EF
        with 6282 (a T=1 card's answer to a Le beyond the end; T=0 cards say 6Cxx, which the
        link resends)."""
        if not (resp.sw == SW_END_OF_FILE and resp.data):
            self._expect_ok(resp, f"READ BINARY {name}")
        if not 1 <= len(resp.data) <= le:
            raise ef.malformed(name, reason=f"asked up to {le} bytes, got {len(resp.data)}")
        return resp.data

    def _read_upto(self, link: ApduLink, cla: int, le: int, name: str) -> bytes:
        """Up to ``le`` bytes from offset 0 of the current EF."""
        return self._check_read(link.send(Apdu(cla, INS_READ_BINARY, 0, 0, le=le)), le, name)

    def _read_to_end(self, link: ApduLink, cla: int, name: str) -> bytes:
        """The whole current EF when nothing says its size: Le=00, then on while 256 came."""
        data = self._read_upto(link, cla, 256, name)
        return data + self._read_rest(link, cla, 256, name) if len(data) == 256 else data

    def _read_rest(self, link: ApduLink, cla: int, offset: int, name: str) -> bytes:
        """The current EF from ``offset`` on, 256 bytes at a time (6B00 at the exact end)."""
        out = bytearray()
        while True:
            off = offset + len(out)
            if off > MAX_TRANSPARENT:
                raise ef.malformed(name, reason="longer than READ BINARY can address")
            resp = link.send(Apdu(cla, INS_READ_BINARY, off >> 8, off & 0xFF, le=256))
            if resp.sw == 0x6B00 and not resp.data:
                return bytes(out)  # the offset is the end of the EF
            out += self._check_read(resp, 256, name)
            if len(resp.data) < 256:
                return bytes(out)

    def _read_by_sfi(self, link: ApduLink, cla: int, sfi: int, name: str, length: int | None) -> bytes | None:
        """READ BINARY with the SFI in P1 (TS 102 221 11.1.3.2): no SELECT of the EF.

        ``length``: the bytes to read when the spec fixes them, else the whole EF (Le=00).
        None when the card refuses: a card that never took an SFI read is then read by path
        for the rest of this facade's life; one that did, only for this EF.
        """
        if self._sfi is False:
            return None
        le = length or 256
        resp = link.send(Apdu(cla, INS_READ_BINARY, 0x80 | sfi, 0x00, le=le))
        if resp.sw in SFI_REFUSED and not resp.data:
            if self._sfi is None:
                log.info("the card refused READ BINARY by SFI (%04X): EFs are selected by path", resp.sw)
                self._sfi = False
            return None
        data = self._check_read(resp, le, f"{name} (SFI {sfi:02X})")
        self._sfi = True
        if length is None and len(data) == 256:  # the EF is now the current EF: read on by offset
            data += self._read_rest(link, cla, 256, name)
        return data

    def _iter_records(self, link: ApduLink, cla: int, fcp: ef.Fcp, name: str) -> Iterator[bytes]:
        """The records of a linear fixed EF, as the FCP describes them (the caller may stop early)."""
        if not fcp.linear or not fcp.record_len or not 1 <= fcp.record_len <= 255:
            raise ef.malformed(f"{name} FCP", reason="expected a linear fixed EF")
        for number in range(1, (fcp.record_count or 0) + 1):
            resp = link.send(Apdu(cla, INS_READ_RECORD, number, 0x04, le=fcp.record_len))
            self._expect_ok(resp, f"READ RECORD {number} of {name}")
            if len(resp.data) != fcp.record_len:
                raise ef.malformed(name, reason=f"record {number} has {len(resp.data)} bytes")
            yield resp.data

    def _read_app_ef(self, fid: int, sfi: int | None, name: str, length: int | None = None) -> bytes:
        """A transparent EF of the application: by SFI when it has one and the card takes it;
        else SELECT it, without FCP when ``length`` (fixed by the spec) says what to read."""
        if sfi is not None and self._sfi is not False:
            link, channel = self._application_on_adf()
            data = self._read_by_sfi(link, cla_for_channel(0x00, channel), sfi, name, length)
            if data is not None:
                return data
        if length is not None:
            self._select_app_ef(fid, name, P2_NO_DATA)
            link, channel = self._open_application()
            return self._read_upto(link, cla_for_channel(0x00, channel), length, name)
        fcp = ef.decode_fcp(self._select_app_ef(fid, name).data)
        link, channel = self._open_application()
        return self._read_binary(link, cla_for_channel(0x00, channel), fcp, name)

    def _read_app_records(self, fid: int, name: str) -> list[bytes]:
        """A linear fixed EF of the application, after a SELECT with FCP (record length and count).

        Not by SFI: learning the length and count that way costs as many APDUs (a 6Cxx on
        T=0, a 6A83 after the last record) as the SELECT, and relies on the card's 6A83.
        """
        fcp = ef.decode_fcp(self._select_app_ef(fid, name).data)
        link, channel = self._open_application()
        return list(self._iter_records(link, cla_for_channel(0x00, channel), fcp, name))

    # --- identities --------------------------------------------------------------------
    def _read_iccid(self) -> str:
        """EF_ICCID is 10 bytes by definition (TS 102 221 13.2): no FCP needed.

        By SFI 02 when the MF is the basic channel's current DF (just after EF_DIR), else
        SELECT by path (P2 0C) and READ BINARY.
        """
        if self._basic_df == "mf":
            data = self._read_by_sfi(self._link, 0x00, ef.SFI_EF_ICCID, "EF_ICCID", ef.ICCID_SIZE)
            if data is not None:
                return ef.decode_iccid(data)
        self._select_mf_ef(ef.FID_EF_ICCID, "EF_ICCID", P2_NO_DATA)
        return ef.decode_iccid(self._read_upto(self._link, 0x00, ef.ICCID_SIZE, "EF_ICCID"))

    def _read_identities(self) -> CardIdentities:
        self._discover()
        # EF_ICCID while the MF is still the basic channel's current DF (SFI); when the
        # application already sits on the basic channel, after its EFs (one SELECT less)
        iccid = self._read_iccid() if self._basic_df == "mf" else None
        self._open_application()
        assert self._aid is not None
        if self._application == "usim":
            imsi = ef.decode_imsi(
                self._read_app_ef(ef.FID_USIM_IMSI, ef.SFI_USIM_IMSI, "EF_IMSI", ef.IMSI_SIZE)
            )
            ad = self._read_app_ef(ef.FID_USIM_AD, ef.SFI_USIM_AD, "EF_AD", ef.AD_MNC_BYTES)
            derived = ef.identities_from_imsi(imsi, ef.decode_mnc_length(ad))
            return CardIdentities(
                application="usim",
                impi=derived.impi,
                impus=derived.impus,
                domain=derived.domain,
                imsi=imsi,
                iccid=iccid or self._read_iccid(),
                aid=self._aid.hex(),
            )
        impi = ef.decode_tlv80_string(
            self._read_app_ef(ef.FID_ISIM_IMPI, ef.SFI_ISIM_IMPI, "EF_IMPI"), "EF_IMPI"
        )
        domain = ef.decode_tlv80_string(
            self._read_app_ef(ef.FID_ISIM_DOMAIN, ef.SFI_ISIM_DOMAIN, "EF_DOMAIN"), "EF_DOMAIN"
        )
        impus = [
            u
            for rec in self._read_app_records(ef.FID_ISIM_IMPU, "EF_IMPU")
            if (u := ef.decode_tlv80_string(rec, "EF_IMPU record")) is not None
        ]
        if not impi or not domain or not impus:
            raise ef.malformed("ISIM identities", reason="IMPI, domain or IMPU missing")
        services = ef.decode_service_table(self._read_app_ef(ef.FID_ISIM_IST, ef.SFI_ISIM_IST, "EF_IST"))
        pcscf: list[str] = []
        if ef.ISIM_SERVICE_PCSCF in services:
            pcscf = [
                a
                for rec in self._read_app_records(ef.FID_ISIM_PCSCF, "EF_P-CSCF")
                if (a := ef.decode_pcscf(rec)) is not None
            ]
        return CardIdentities(
            application="isim",
            impi=impi,
            impus=impus,
            domain=domain,
            iccid=iccid or self._read_iccid(),
            pcscf=pcscf,
            isim_services=services,
            gba_u=ef.ISIM_SERVICE_GBA in services,
            aid=self._aid.hex(),
        )
