"""An RFC 6043 KMS: Ticket Request (4.2.1) and Ticket Resolve (4.2.3) exchanges, PSK variants, issuing MIKEY
base tickets (Appendix A) under a ticket protection key only this KMS holds (mode 1 of 4.1.1)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import algs, prf
from .errors import (
    ERR_AUTH_FAILURE,
    ERR_INVALID_ID,
    ERR_INVALID_TICKET,
    ERR_INVALID_TS,
    ERR_UNSPECIFIED,
    ERR_UNSUPPORTED_MESSAGE,
    MikeyReject,
    reject,
)
from .initiator_data import verify_vr
from .keys import TGK_TYPES, check_key_data, encrypt_kemac, protection_keys
from .messages import TP_GRAMMAR, Decoded, decode, match_grammar, verify_mac
from .ntp import ntp_utc, to_unix, tr
from .session import TransferKeys, check_transfer
from .ticket import build_base_ticket, default_algorithms, open_base_ticket
from .wire import (
    DT_ERROR,
    DT_REQUEST_INIT_PSK,
    DT_REQUEST_RESP,
    DT_RESOLVE_INIT_PSK,
    DT_RESOLVE_RESP,
    IDR,
    IDR_I,
    IDR_KMS,
    IDR_R,
    KD_MPK,
    KD_TGK,
    MAP_EMPTY,
    RANDR_KMS,
    TP,
    TR,
    TR_END,
    TR_START,
    Err,
    Flags,
    Header,
    Kemac,
    KeyData,
    Payload,
    PolicyHead,
    RandR,
    T,
    Ticket,
    V,
    decode_key_data,
    encode_inner_chain,
    encode_message,
)

PskLookup = Callable[[bytes], bytes | None]


def build_error(
    hdr: Header, err_nos: list[int], t: T, *, auth_key: bytes | None = None, mac_alg: int = algs.MAC_NULL
) -> bytes:
    """Error message = HDR, T, (ERR), [V] (RFC 6043 5.4): version, PRF func, CSB ID of the failing message,
    V = 0; the MAC (if any) covers the Error message alone, under the auth_key of the failing message."""
    h = Header(DT_ERROR, hdr.csb_id, hdr.prf_func, False, MAP_EMPTY, (), hdr.version)
    body: list[Payload] = [t, *(Err(n) for n in err_nos)]
    if auth_key is None or mac_alg == algs.MAC_NULL:
        return encode_message(h, body)
    n = algs.MAC_ALGS[mac_alg][0]
    raw = encode_message(h, [*body, V(mac_alg, bytes(n))])
    return raw[:-n] + algs.compute_mac(mac_alg, auth_key, raw[:-n])


@dataclass
class KmsEvent:
    """What the KMS decided, for tests and reports (no key material)."""

    request: str
    outcome: str
    clause: str = ""
    notes: list[str] = field(default_factory=list)


class KmsEngine:
    """handle(request bytes) -> response bytes (REQUEST_RESP, RESOLVE_RESP or an Error message).

    psk_lookup(identity) -> the key shared by that user and the KMS (TS 33.328: Ks_NAF, found by the B-TID);
    it is asked with IDRpsk's ID Data when IDRpsk is present, else with IDRi's / IDRr's ID Data.
    ticket_key: the TPK; only this KMS knows it, so every ticket must be resolved here (E flag set).
    """

    def __init__(
        self,
        psk_lookup: PskLookup,
        ticket_key: bytes,
        now: Callable[[], float] = time.time,
        *,
        kms_identity: bytes | None = None,
        tpk_id: bytes | None = b"rfc6043-kms-tpk-1",
        default_validity: int = 86400,
        iv_timestamp: str = "response",
        authorize: Callable[[bytes, list[bytes]], bytes | None] | None = None,
        random: Callable[[int], bytes] = os.urandom,
        spi_len: int = 4,
        kms_id_type: int = 0,
        owns: Callable[[bytes, bytes], bool] | None = None,
        max_skew: float | None = None,
        grant_flags: Callable[[Flags], Flags] | None = None,
        max_validity: float | None = None,
    ) -> None:
        if len(ticket_key) < 16:
            raise ValueError("the TPK must have 128 bits or more (RFC 6043 12.1)")
        if iv_timestamp not in ("response", "initial"):
            raise ValueError("iv_timestamp is 'response' or 'initial'")
        self._psk_lookup = psk_lookup
        self._tpk = ticket_key
        self._now = now
        self.kms_identity = kms_identity
        self.tpk_id = tpk_id
        self.default_validity = default_validity
        self.iv_timestamp = iv_timestamp
        self._authorize = authorize or (lambda who, allowed: who if who in allowed else None)
        self._random = random
        self.spi_len = spi_len
        #: ID Type of the KMS identity when the request does not show one (RFC 3830 6.7: 0 NAI, 1 URI)
        self.kms_id_type = kms_id_type
        #: owns(psk_identity, claimed IDRi/IDRr) -> bool: may the PSK's user use that identity (4.2.1.4)
        self._owns = owns or (lambda psk_id, ident: True)
        #: refuse an initial message whose NTP T is further than this from now (RFC 3830 5.3, 5.4)
        self.max_skew = max_skew
        #: a hook to change the granted flags (tests: a KMS that decides differently, 4.2.1.5)
        self._grant_flags = grant_flags
        #: the longest validity granted (TRe is moved earlier, K = 1)
        self.max_validity = max_validity
        self.events: list[KmsEvent] = []
        #: every (request, response) handled, raw bytes (no keys in clear: MIKEY encrypts them)
        self.transcript: list[tuple[bytes, bytes]] = []

    def __repr__(self) -> str:
        return f"KmsEngine(kms_identity={self.kms_identity!r}, events={len(self.events)})"

    # -------------------------------------------------------------------------------------------- entry point

    def handle(self, request: bytes) -> bytes:
        response = self._handle(bytes(request))
        self.transcript.append((bytes(request), response))
        return response

    def _kms_idr(self, d: Decoded) -> IDR:
        assert self.kms_identity is not None
        mine = d.get("IDRkms")
        return IDR(IDR_KMS, mine.id_type if isinstance(mine, IDR) else self.kms_id_type, self.kms_identity)

    def _handle(self, request: bytes) -> bytes:
        now = self._now()
        hdr = _header_guess(request)
        try:
            d = decode(request)
        except MikeyReject as e:
            self.events.append(KmsEvent("?", f"refused: {e.code}: {e.reason}", e.clause))
            return build_error(hdr, [e.err_no], ntp_utc(now))
        if d.msg.header.data_type == DT_ERROR:
            # 5.4: Error messages report errors in initial and response messages, "but not in Error messages"
            self.events.append(KmsEvent(d.name, "Error message received: not answered", "RFC 6043 5.4"))
            return b""
        if d.msg.header.data_type not in (DT_REQUEST_INIT_PSK, DT_RESOLVE_INIT_PSK):
            self.events.append(KmsEvent(d.name, "refused: not a KMS request", "RFC 6043 4.2"))
            return build_error(d.msg.header, [ERR_UNSUPPORTED_MESSAGE], ntp_utc(now))
        is_req = d.msg.header.data_type == DT_REQUEST_INIT_PSK
        own_label, own_role = ("IDRi", IDR_I) if is_req else ("IDRr", IDR_R)
        psk_idr = d.get("IDRpsk") or d.get(own_label)
        psk_id = psk_idr.data if isinstance(psk_idr, IDR) else b""
        psk = self._psk_lookup(psk_id)
        v = d.msg.payloads[-1]
        assert isinstance(v, V)
        randr = d.get("RANDRi" if is_req else "RANDRr")
        assert isinstance(randr, RandR)
        h = d.msg.header
        if psk is None:
            self.events.append(
                KmsEvent(d.name, "refused: no pre-shared key for the identity", "RFC 6043 4.2.1.2")
            )
            return build_error(h, [ERR_AUTH_FAILURE], ntp_utc(now))
        direction_rand = (randr.rand, None) if is_req else (None, randr.rand)
        try:
            k1 = protection_keys(h.prf_func, psk, h.csb_id, 1, *direction_rand, mac_alg=v.mac_alg)
            fallback = {own_role: [psk_id], IDR_KMS: [self.kms_identity or b""]}
            reading = verify_mac(d, k1.auth, fallback_ids=fallback)
        except MikeyReject as e:
            # 5.4: failure to authenticate the peer: discard; the Error message is optional (unauthenticated).
            self.events.append(KmsEvent(d.name, f"refused: {e.code}: {e.reason}", e.clause))
            return build_error(h, [ERR_AUTH_FAILURE], ntp_utc(now))
        ev = KmsEvent(d.name, "accepted", notes=[f"MAC verified ({reading})"])
        self.events.append(ev)
        try:
            if len(randr.rand) < len(psk):
                raise reject(
                    "rfc6043.rand_len",
                    "RFC 6043 12.1",
                    f"{'RANDRi' if is_req else 'RANDRr'} has {len(randr.rand)} bytes, the pre-shared key "
                    f"{len(psk)}: the RANDs MUST be at least as long as the longest pre-shared key",
                )
            own = d.get(own_label)
            if isinstance(own, IDR) and not self._owns(psk_id, own.data):
                raise reject(
                    "rfc6043.kms.identity",
                    "RFC 6043 4.2.1.4" if is_req else "RFC 6043 4.2.3.4",
                    f"{own_label} is not an identity of the user the pre-shared key belongs to",
                    err_no=ERR_INVALID_ID,
                )
            t = d.get("T")
            assert isinstance(t, T)
            at = to_unix(t.ts_type, t.value)
            if self.max_skew is not None and at is not None and abs(at - now) > self.max_skew:
                raise reject(
                    "rfc6043.kms.skew",
                    "RFC 3830 5.3 / 5.4",
                    f"timestamp {at - now:+.0f} s from the KMS clock (allowed {self.max_skew:g} s)",
                    err_no=ERR_INVALID_TS,
                )
            return self._request(d, psk, now, ev) if is_req else self._resolve(d, psk, psk_id, now, ev)
        except MikeyReject as e:
            ev.outcome = f"refused: {e.code}: {e.reason}"
            ev.clause = e.clause
            return build_error(
                h,
                [e.err_no if e.err_no != ERR_UNSPECIFIED else ERR_UNSPECIFIED],
                ntp_utc(now),
                auth_key=k1.auth,
                mac_alg=v.mac_alg,
            )

    # -------------------------------------------------------------------------------------------- requests

    def _response_t(self, d: Decoded, now: float) -> T:
        t = d.get("T")
        assert isinstance(t, T)
        # 4.2.1.5 / 4.2.3.5: fresh NTP timestamp; with COUNTER the value MAY equal the request's.
        return t if t.ts_type == 2 else ntp_utc(now)

    def _grant(
        self, tp: TP, d: Decoded, now: float, ev: KmsEvent
    ) -> tuple[PolicyHead, list[Payload], list[KeyData]]:
        h = tp.head
        f = h.flags
        changed = False
        parts = match_grammar(tp.tp_payloads, TP_GRAMMAR, "RFC 6043 6.10", allow_genext=False)
        if (h.ticket_type, h.subtype, h.version) != (1, 1, 1):
            ev.notes.append(f"requested Ticket Type {h.ticket_type}/{h.subtype}/{h.version}; granted 1/1/1")
            changed = True
        # Mode 1 (4.1.1): the TPK is known only here: D (KMS made it), E (resolve mandatory); N, O: no extra
        # processing needed for a base ticket.
        nf = replace(f, D=True, E=True, N=True, O=True, K=False)
        if nf.G and not nf.F or nf.M and not nf.F or nf.I and not nf.F:
            nf = replace(nf, F=True)  # G => F, M => F; F = 1 when I = 1 and a TGK is encoded (6.10)
        if not nf.G and not nf.H:
            nf = replace(nf, H=True)  # NOT G => H
        if (f.E, f.F, f.H) != (nf.E, nf.F, nf.H):
            changed = True
        out: list[Payload] = []
        if self.kms_identity is not None:
            out.append(self._kms_idr(d))
        idri = d.get("IDRi")
        asked = parts["IDRi"][0] if parts["IDRi"] else None
        if isinstance(asked, IDR) and (not isinstance(idri, IDR) or asked.data == idri.data):
            out.append(asked)
        elif isinstance(idri, IDR):
            # the granted policy names the authenticated requester (TP IDRi: "the identity of the peer that
            # requested or created the ticket", 6.10), whatever the desired policy said
            out.append(IDR(IDR_I, idri.id_type, idri.data))  # 4.2.1.1: IDRi SHOULD be in the granted policy
            changed = True
        if parts["TRs"]:
            out += parts["TRs"]
        else:
            out.append(tr(TR_START, now))
            changed = True
        tre = parts["TRe"][0] if parts["TRe"] else None
        tre_at = to_unix(tre.ts_type, tre.value) if isinstance(tre, TR) else None
        if (
            tre is not None
            and self.max_validity is not None
            and (tre_at is None or tre_at > now + self.max_validity)
        ):
            out.append(tr(TR_END, now + self.max_validity))
            ev.notes.append(f"validity cut to {self.max_validity:g} s")
            changed = True
        elif tre is not None:
            out.append(tre)
        else:
            out.append(tr(TR_END, now + self.default_validity))
            ev.notes.append(f"no TRe requested; granted a validity of {self.default_validity} s")
            changed = True
        out += parts["TRr"]
        out += parts["IDRapp"]
        out += parts["IDRr"]
        keys = self._requested_keys(parts["KEMAC"], h.prf_func)
        if parts["KEMAC"]:
            changed = True  # the KEMAC is removed from the granted policy (6.10)
        if any(k.key_type in TGK_TYPES for k in keys) and nf.I and not nf.F:
            nf = replace(nf, F=True)
        if self._grant_flags is not None:
            forced = self._grant_flags(nf)
            changed = changed or forced != nf
            nf = forced
        nf = replace(nf, K=changed)
        return PolicyHead(1, 1, 1, h.prf_func, nf, 0), out, keys

    def _requested_keys(self, kemacs: list[Payload], prf_func: int) -> list[KeyData]:
        default_len = 32 if prf_func == prf.PRF_HMAC_SHA_256 else 16
        specs: list[KeyData] = []
        for k in kemacs:
            assert isinstance(k, Kemac)
            specs += decode_key_data(k.encr_data)
        if not specs:  # 4.2.1.5: RECOMMENDED default KEMAC = a single TGK
            specs = [KeyData(KD_TGK, bytes(default_len))]
        out = []
        for s in specs:
            if s.key_type == KD_MPK:
                continue
            n = len(s.key) or default_len
            salt = self._random(len(s.salt) or 14) if s.salt is not None else None
            spi = s.spi if s.kv_type == 1 and s.spi else self._random(self.spi_len)
            out.append(KeyData(s.key_type, self._random(n), salt, 1, spi))
        return out

    def _request(self, d: Decoded, psk: bytes, now: float, ev: KmsEvent) -> bytes:
        tp = d.get("TP")
        assert isinstance(tp, TP)
        head, tp_payloads, session_keys = self._grant(tp, d, now, ev)
        mpk_len = 32 if head.prf_func == prf.PRF_HMAC_SHA_256 else 16
        mpk = KeyData(KD_MPK, self._random(mpk_len), None, 1, self._random(self.spi_len))
        tt = ntp_utc(now)
        trand = self._random(max(32, len(self._tpk), mpk_len))
        ticket = build_base_ticket(
            head,
            encode_inner_chain(tp_payloads),
            tpk=self._tpk,
            tpk_id=self.tpk_id,
            t=tt,
            rand=trand,
            keys=[mpk, *session_keys],
        )
        mpki, mpkr = prf.mpk_split(head.prf_func, mpk.key, trand)
        kem_keys = (
            [replace(mpk, key=mpki)] + ([replace(mpk, key=mpkr)] if head.flags.I else []) + session_keys
        )
        return self._respond(
            d, psk, now, DT_REQUEST_RESP, [ticket], kem_keys, [], ev, notes=[f"granted flags {head.flags}"]
        )

    def _respond(
        self,
        d: Decoded,
        psk: bytes,
        now: float,
        dt: int,
        before_kemac: list[Payload],
        kem_keys: list[KeyData],
        after_kemac: list[Payload],
        ev: KmsEvent,
        notes: list[str],
    ) -> bytes:
        h = d.msg.header
        v = d.msg.payloads[-1]
        assert isinstance(v, V)
        t = self._response_t(d, now)
        is_req = dt == DT_REQUEST_RESP
        randr = d.get("RANDRi" if is_req else "RANDRr")
        assert isinstance(randr, RandR)
        encr_alg = default_algorithms(h.prf_func)[0]
        mac_alg = v.mac_alg
        k2 = protection_keys(
            h.prf_func,
            psk,
            h.csb_id,
            2,
            *((randr.rand, None) if is_req else (None, randr.rand)),
            mac_alg=mac_alg,
            encr_alg=encr_alg,
        )
        it = d.get("T")
        assert isinstance(it, T)
        kemac = encrypt_kemac(kem_keys, k2, encr_alg, h.csb_id, t if self.iv_timestamp == "response" else it)
        rh = Header(dt, h.csb_id, h.prf_func, False, h.map_type, (), h.version)
        body: list[Payload] = [t] + ([self._kms_idr(d)] if self.kms_identity is not None else [])
        body += [*before_kemac, kemac, *after_kemac]
        n = algs.MAC_ALGS[mac_alg][0]
        raw = encode_message(rh, [*body, V(mac_alg, bytes(n))])
        raw = raw[:-n] + algs.compute_mac(mac_alg, k2.auth, raw[:-n] + d.raw)
        ev.outcome = f"{'REQUEST_RESP' if is_req else 'RESOLVE_RESP'} sent"
        ev.notes += notes
        return raw

    # -------------------------------------------------------------------------------------------- resolve

    def _resolve(self, d: Decoded, psk: bytes, psk_id: bytes, now: float, ev: KmsEvent) -> bytes:
        ticket = d.get("TICKET")
        assert isinstance(ticket, Ticket)
        opened = open_base_ticket(ticket, {self.tpk_id: self._tpk})
        head = ticket.head
        parts = match_grammar(ticket.tp_payloads, TP_GRAMMAR, "RFC 6043 6.10", allow_genext=False)
        for label, cmp in (("TRs", lambda a: a > now), ("TRe", lambda a: a < now)):
            for p in parts[label]:
                assert isinstance(p, TR)
                at = to_unix(p.ts_type, p.value)
                if at is not None and cmp(at):
                    raise reject(
                        "rfc6043.ticket.validity",
                        "RFC 6043 6.10",
                        f"the ticket is outside its validity period ({label})",
                        err_no=ERR_INVALID_TICKET,
                    )
        allowed = [p.data for p in parts["IDRr"] if isinstance(p, IDR)]
        idrr = d.get("IDRr")
        who = idrr.data if isinstance(idrr, IDR) else psk_id
        answered = self._authorize(who, allowed)
        if answered is None:
            raise reject(
                "rfc6043.resolve.unauthorized",
                "RFC 6043 4.2.3.4",
                "the Responder is not among the responders the Ticket Policy authorizes",
                err_no=ERR_INVALID_ID,
            )
        mpki, mpkr = prf.mpk_split(head.prf_func, opened.mpk.key, opened.rand)
        after: list[Payload] = []
        session = list(opened.session_keys)
        notes = [f"ticket opened ({opened.iv_reading})"]
        if head.flags.I:
            self._check_initiator_data(ticket, mpkr, d.msg.header.prf_func, notes)
            rkms = self._random(max(32, len(mpkr), *(len(k.key) for k in session)))
            mpkr_f = prf.fork_key(head.prf_func, mpkr, prf.C_MPKR_FORK, answered, rkms)
            session = [
                replace(k, key=prf.fork_key(head.prf_func, k.key, prf.C_TGK_FORK, answered, rkms))
                if k.key_type in TGK_TYPES
                else k
                for k in session
            ]
            kem = [replace(opened.mpk, key=mpki), replace(opened.mpk, key=mpkr_f), *session]
            id_type = idrr.id_type if isinstance(idrr, IDR) else 1
            after = [IDR(IDR_R, id_type, answered), RandR(RANDR_KMS, rkms)]
            notes.append("keys forked (5.1.1)")
        else:
            kem = [replace(opened.mpk, key=mpki), *session]
        check_key_data(kem, "RESOLVE_RESP KEMAC", mpks=(1, 2), algorithms=[("prf", head.prf_func)])
        return self._respond(d, psk, now, DT_RESOLVE_RESP, [], kem, after, ev, notes)

    # -------------------------------------------------------------------------------------------- audit

    def audit_transfer(
        self,
        transfer_init: bytes,
        transfer_resp: bytes | None = None,
        *,
        responder_ids: list[bytes] | None = None,
    ) -> TransferKeys:
        """From the keys only this KMS knows (the TPK): open the ticket carried in TRANSFER_INIT, verify the
        TRANSFER_INIT MAC under MPKi (5.1.2, 5.5), and TRANSFER_RESP under MPKi or MPKr' (forked with the
        modifier TRANSFER_RESP carries, 5.1.1), then derive every crypto session's TEK and salt (5.1.3).
        The result is what both agents must hand out."""
        ti = decode(transfer_init)
        ticket = ti.get("TICKET")
        if not isinstance(ticket, Ticket):
            raise reject("rfc6043.transfer.no_ticket", "RFC 6043 4.2.2.1", "TRANSFER_INIT without TICKET")
        opened = open_base_ticket(ticket, {self.tpk_id: self._tpk})
        mpki, mpkr = prf.mpk_split(ticket.head.prf_func, opened.mpk.key, opened.rand)
        if ticket.head.flags.I:
            verify_vr(ticket, mpkr, [ticket.head.prf_func, ti.msg.header.prf_func])
        return check_transfer(
            transfer_init,
            transfer_resp,
            ticket_prf=ticket.head.prf_func,
            mpki=mpki,
            mpkr=mpkr,
            session_keys=opened.session_keys,
            responder_ids=responder_ids,
        )

    @staticmethod
    def _check_initiator_data(ticket: Ticket, mpkr: bytes, hdr_prf: int, notes: list[str]) -> None:
        notes.append(verify_vr(ticket, mpkr, [ticket.head.prf_func, hdr_prf]))


def _header_guess(buf: bytes) -> Header:
    """The HDR fields an Error message copies, read as far as the bytes allow."""
    try:
        return Header(
            DT_ERROR,
            int.from_bytes(buf[4:8], "big") if len(buf) >= 8 else 0,
            (buf[3] & 0x7F) if len(buf) >= 4 and (buf[3] & 0x7F) in (0, 1) else 1,
            False,
            MAP_EMPTY,
            (),
            1,
        )
    except Exception:  # noqa: BLE001 -- never fail while reporting a failure
        return Header(DT_ERROR, 0)
