"""The lab KMS's MIKEY-TICKET engine, sans-IO: REQUEST_INIT -> REQUEST_RESP, RESOLVE_INIT -> RESOLVE_RESP.

An engine is anything with ``handle(request: bytes) -> bytes`` (:class:`KmsEngine`); the HTTP
front (``ue_agent.lab.kms``) authenticates the UE with GBA and lets the engine find the
pre-shared key named by IDRpsk through a callback. Every refusal is a MIKEY Error message
(RFC 6043 5.4: HDR, T, ERR, [V]; the MAC under the request's auth_key when the request was
authenticated, covering only the Error message).

This engine issues MIKEY base tickets (RFC 6043 Appendix A) under a TPK only it holds
(mode 1 of 4.1.1): the initiator and every responder must come to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from ue_agent.crypto import mikey_prf
from ue_agent.errors import AgentError, KmsError, MikeyError
from ue_agent.kms import anonymity, divert, ids, mikey, protect, tickets
from ue_agent.secret import Secret

DEFAULT_VALIDITY = 3600
MAX_VALIDITY = 7 * 24 * 3600
HTTP_OK = 200

#: the flags this KMS may grant (RFC 6043 6.10); D, E and N/O are always set by the KMS
# L / M (initiator / responder may supply session keys): granted to a conference focus only when the
# KMS knows its focuses (``focus_identities``; 6.10 leaves who to KMS policy), else when asked (docs/kms.md)
_GRANTABLE = mikey.F_F | mikey.F_G | mikey.F_H | mikey.F_I | mikey.F_J | mikey.F_L | mikey.F_M
_ALWAYS = mikey.F_D | mikey.F_E | mikey.F_N | mikey.F_O


class KmsEngine(Protocol):
    """The seam between a KMS HTTP front and the MIKEY processing."""

    def handle(self, request: bytes) -> bytes: ...


#: IDRpsk ID Data (None when absent) -> the pre-shared key, or None when unknown
PskLookup = Callable[[bytes | None], Secret | None]
#: IDRpsk ID Data (None when absent) -> the identities (IMPUs) the key's owner may use
IdentityLookup = Callable[[bytes | None], list[str]]


def reply_status(body: bytes) -> int:
    """The HTTP status for an engine's answer: 200 for a response, 400/403 for an Error message."""
    try:
        msg = mikey.Message.decode(body)
    except MikeyError:
        return 500
    if msg.header.data_type != mikey.DT_ERROR:
        return HTTP_OK
    err = msg.first(mikey.Error)
    bad_request = (mikey.ERR_UNSPECIFIED, mikey.ERR_INVALID_DT, mikey.ERR_UNSUPPORTED_MESSAGE)
    return 400 if err is not None and err.error_no in bad_request else 403


@dataclass
class KmsStats:
    requests: int = 0
    resolves: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


class _Refuse(Exception):
    def __init__(self, err_no: int, reason: str) -> None:
        super().__init__(reason)
        self.err_no, self.reason = err_no, reason


class KmsService:
    """Ticket issuing and resolving for one KMS identity (its FQDN): a :class:`KmsEngine`."""

    def __init__(
        self,
        kms_id: str,
        psk_of: PskLookup,
        identities_of: IdentityLookup,
        *,
        ring: tickets.TpkRing | None = None,
        clock: Callable[[], float] = time.time,
        skew: float = 300.0,
        max_validity: int = MAX_VALIDITY,
        cdiv_as: divert.CdivQuestion | None = None,
        focus_identities: Collection[str] | None = None,
    ) -> None:
        self.kms_id = kms_id
        #: the identities allowed to supply session keys (RFC 6043 6.10 L/M): L only for a
        #: focus initiator, M only when every responder is a focus; None grants them when asked
        self.focus_identities = (
            None if focus_identities is None else frozenset(ids.canonical(u) for u in focus_identities)
        )
        self._psk_of = psk_of
        self._identities_of = identities_of
        self.ring = ring or tickets.TpkRing()
        if ring is None:
            self.ring.add(b"tpk-1")
        self.clock = clock
        self.skew = skew
        self.max_validity = max_validity
        self.stats = KmsStats()
        #: diversions (TR 33.829 9.2, 9.3): identities accepted per ticket, the CDIV AS question
        self.diversions = divert.DivertBook(cdiv_as)
        #: anonymous tickets issued (TR 33.828 req. 49): ticket RAND -> (TRe, the real initiator)
        self.anonymous: dict[bytes, tuple[float, str]] = {}
        self._seen: dict[tuple[int, bytes], float] = {}  # replay cache (RFC 6043 12.4)

    # -- entry point

    def handle(self, request: bytes) -> bytes:
        """One request body -> the answer body (never raises for bad input)."""
        try:
            msg = mikey.Message.decode(request)
        except MikeyError as e:
            return self._refusal(None, None, mikey.ERR_UNSPECIFIED, e.code)
        keys: protect.MessageKeys | None = None
        try:
            dt = msg.header.data_type
            if dt not in (mikey.DT_REQUEST_INIT_PSK, mikey.DT_RESOLVE_INIT_PSK):
                raise _Refuse(mikey.ERR_UNSUPPORTED_MESSAGE, f"{msg.name} is not a KMS request")
            if msg.header.prf_func not in protect.FAMILIES:
                raise _Refuse(mikey.ERR_INVALID_PRF, "PRF func")
            role = mikey.RAND_ROLE_I if dt == mikey.DT_REQUEST_INIT_PSK else mikey.RAND_ROLE_R
            rands = msg.all(mikey.RandRole, role)
            if len(rands) != 1:
                raise _Refuse(mikey.ERR_UNSPECIFIED, "the request needs exactly one RANDRi/RANDRr")
            idr_psk = msg.first(mikey.IdRole, mikey.ROLE_PSK)
            psk = self._psk_of(idr_psk.data if idr_psk else None)
            if psk is None:
                raise _Refuse(mikey.ERR_AUTH_FAILURE, "no pre-shared key for this IDRpsk")
            rand = rands[0].rand
            rand_i, rand_r = (rand, None) if role == mikey.RAND_ROLE_I else (None, rand)
            h = msg.header
            keys = protect.MessageKeys.derive(
                psk, h.csb_id, mikey_prf.DIR_INITIAL, rand_i, rand_r, h.prf_func
            )
            peer_role = mikey.ROLE_I if role == mikey.RAND_ROLE_I else mikey.ROLE_R
            follow = protect.identity(msg, peer_role, b"") + protect.identity(
                msg, mikey.ROLE_KMS, self.kms_id.encode()
            )
            try:
                protect.verify(request, msg, keys, follow)  # 5.5: || Identity_i/r || Identity_kms
            except MikeyError as e:
                keys.zeroize()
                keys = None  # not authenticated: the refusal is not signed (5.4)
                raise _Refuse(
                    mikey.ERR_AUTH_FAILURE if e.code == "mikey.bad_mac" else mikey.ERR_INVALID_HA, e.code
                ) from None
            try:
                protect.check_fresh(msg, self.clock(), self.skew)
            except MikeyError as e:
                raise _Refuse(mikey.ERR_INVALID_TS, e.code) from None
            self._replay(h.csb_id, rand)
            kms = msg.first(mikey.IdRole, mikey.ROLE_KMS)
            if kms is not None and kms.text != self.kms_id:
                raise _Refuse(mikey.ERR_INVALID_ID, "IDRkms names another KMS")
            owner = idr_psk.data if idr_psk else None
            if dt == mikey.DT_REQUEST_INIT_PSK:
                return self._request(request, msg, owner, psk, rand)
            return self._resolve(request, msg, owner, psk, rand)
        except _Refuse as r:
            return self._refusal(msg, keys, r.err_no, r.reason)
        except MikeyError as e:  # structurally valid MIKEY, wrong contents
            return self._refusal(msg, keys, mikey.ERR_UNSPECIFIED, e.code)
        except AgentError as e:
            return self._refusal(msg, keys, mikey.ERR_INVALID_ID, e.code)
        finally:
            if keys is not None:
                keys.zeroize()

    # -- exchanges

    def _own_identity(self, msg: mikey.Message, role: int, owner: bytes | None) -> str:
        idr = msg.first(mikey.IdRole, role)
        if idr is None:
            raise _Refuse(mikey.ERR_INVALID_ID, "this KMS needs the requester's identity in an IDR payload")
        ident = ids.canonical(idr.text)
        if ident not in {ids.canonical(u) for u in self._identities_of(owner)}:
            raise _Refuse(mikey.ERR_INVALID_ID, "identity is not one of the subscriber's")
        return ident

    def _request(
        self, raw: bytes, msg: mikey.Message, owner: bytes | None, psk: Secret, rand_i: bytes
    ) -> bytes:
        initiator = self._own_identity(msg, mikey.ROLE_I, owner)
        tp = msg.one(mikey.TicketPolicy)
        if tp.ticket_type != mikey.TICKET_MIKEY_BASE:
            raise _Refuse(mikey.ERR_INVALID_TICKET, "this KMS issues MIKEY base tickets (type 1) only")
        if tp.prf_func not in protect.FAMILIES:
            raise _Refuse(mikey.ERR_INVALID_TPPAR, "ticket PRF func")
        recipients = tuple(ids.pattern(r.text) for r in tp.policy_all(mikey.IdRole, mikey.ROLE_R))
        if not recipients:
            raise _Refuse(mikey.ERR_INVALID_TPPAR, "the Ticket Policy names no responder (IDRr)")
        now = self.clock()
        tre = tp.policy_first(mikey.TimestampRole, mikey.TS_ROLE_EXPIRY)
        wanted = protect.unix_of(tre) - now if tre is not None else DEFAULT_VALIDITY
        expiry = now + max(1, min(int(wanted), self.max_validity))
        flags = (tp.flags & _GRANTABLE) | _ALWAYS
        if self.focus_identities is not None:  # 6.10 L/M: only a focus supplies keys
            if initiator not in self.focus_identities:
                flags &= ~mikey.F_L
            if not all(r in self.focus_identities for r in recipients):
                flags &= ~mikey.F_M
        # TR 33.828 req. 49: an anonymous ticket names the RFC 3323 anonymous URI as IDRi
        shown = anonymity.ANONYMOUS_URI if anonymity.asked(msg) else initiator
        # 6.10: NOT G implies H, G implies F, I implies E; F when forking with a TGK
        if not flags & mikey.F_G:
            flags |= mikey.F_H
        if flags & (mikey.F_G | mikey.F_I):
            flags |= mikey.F_F
        granted = mikey.TicketPolicy(
            mikey.TICKET_MIKEY_BASE,
            mikey.BASE_SUBTYPE,
            mikey.BASE_VERSION,
            tp.prf_func,
            flags,
            [
                mikey.IdRole(mikey.ROLE_KMS, mikey.ID_NAI, self.kms_id.encode()),
                mikey.IdRole(mikey.ROLE_I, mikey.ID_URI, shown.encode()),
                protect.tr(mikey.TS_ROLE_START, now),
                protect.tr(mikey.TS_ROLE_EXPIRY, expiry),
                *(mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, r.encode()) for r in recipients),
            ],
        )
        if (
            granted.body()
            != mikey.TicketPolicy(
                tp.ticket_type, tp.subtype, tp.version, tp.prf_func, tp.flags & ~mikey.F_K, tp.tp_data
            ).body()
        ):
            granted.flags |= mikey.F_K  # 6.10 K: the KMS changed the desired Ticket Policy
        tk = tickets.new_keys(tp.prf_func)
        if shown != initiator:  # kept by the KMS (audit) until the ticket expires, never in the ticket
            for r in [r for r, (exp, _) in self.anonymous.items() if exp <= now]:
                del self.anonymous[r]
            self.anonymous[tk.rand] = (expiry, initiator)
        try:
            ticket = tickets.issue(self.ring, granted, tk, now)
            mpk_i, mpk_r = tk.mpk_pair()
            spi = tk.mpk_spi
            items = [mikey.KeyData(mikey.KEY_MPK, mpk_i, kv_type=mikey.KV_SPI, kv_data=(spi,))]
            if flags & mikey.F_I:
                items.append(mikey.KeyData(mikey.KEY_MPK, mpk_r, kv_type=mikey.KV_SPI, kv_data=(spi,)))
            items.append(mikey.KeyData(mikey.KEY_TGK, tk.tgk, kv_type=mikey.KV_SPI, kv_data=(tk.tgk_spi,)))
            body = self._respond(raw, msg, mikey.DT_REQUEST_RESP, psk, rand_i, None, [ticket], items, [])
            mpk_i.zeroize()
            mpk_r.zeroize()
        finally:
            tk.zeroize()
        self.stats.requests += 1
        return body

    def _resolve(
        self, raw: bytes, msg: mikey.Message, owner: bytes | None, psk: Secret, rand_r: bytes
    ) -> bytes:
        responder = self._own_identity(msg, mikey.ROLE_R, owner)
        ticket = msg.one(mikey.Ticket)
        try:
            tk = tickets.resolve(self.ring, ticket)
        except KmsError as e:
            raise _Refuse(mikey.ERR_INVALID_TICKET, e.message) from None
        try:
            return self._resolve_keys(raw, msg, responder, psk, rand_r, ticket, tk)
        finally:
            tk.zeroize()

    def _resolve_keys(
        self,
        raw: bytes,
        msg: mikey.Message,
        responder: str,
        psk: Secret,
        rand_r: bytes,
        ticket: mikey.Ticket,
        tk: tickets.TicketKeys,
    ) -> bytes:
        now = self.clock()
        tre = ticket.policy_first(mikey.TimestampRole, mikey.TS_ROLE_EXPIRY)
        trs = ticket.policy_first(mikey.TimestampRole, mikey.TS_ROLE_START)
        expiry = protect.unix_of(tre) if tre is not None else float("inf")
        if now >= expiry or (trs is not None and now < protect.unix_of(trs) - self.skew):
            raise _Refuse(mikey.ERR_TICKET_EXPIRED, "ticket outside its validity period")
        mpk_i, mpk_r = tk.mpk_pair()
        own: list[Secret] = [mpk_i, mpk_r]
        try:
            forked = ticket.flag(mikey.F_I)
            if forked:
                self._check_initiator_data(ticket, mpk_r)
            recipients = [r.text for r in ticket.policy_all(mikey.IdRole, mikey.ROLE_R)]
            try:  # recipients, or a diversion (kms/divert.py: TR 33.829 9.2, 9.3.2)
                extra = self.diversions.check(msg, responder, recipients, ticket, tk.rand, expiry, now)
            except divert.Refusal as r:
                raise _Refuse(r.err_no, r.reason) from None
            initiator = ticket.policy_first(mikey.IdRole, mikey.ROLE_I)
            if initiator is not None and anonymity.is_anonymous(initiator.text):
                extra.append(anonymity.voucher())  # the KMS vouches for the withheld initiator
            spi = tk.mpk_spi
            items = [mikey.KeyData(mikey.KEY_MPK, mpk_i, kv_type=mikey.KV_SPI, kv_data=(spi,))]
            tgk = tk.tgk
            tail: list[mikey.Payload] = []
            if forked:
                # 4.2.3.5 / 5.1.1: fork MPKr and the TGK with the modifier (IDRr, RANDRkms)
                id_r = responder.encode()
                rand_kms = self.modifier_rand()
                f_mpk = mikey_prf.fork(
                    mpk_r.reveal(), mikey_prf.FORK_MPKR_CONST, id_r, rand_kms, ticket.prf_func
                )
                f_tgk = mikey_prf.fork(
                    tgk.reveal(), mikey_prf.FORK_TGK_CONST, id_r, rand_kms, ticket.prf_func
                )
                mpk_rf, tgk = Secret(f_mpk, "MPKr'"), Secret(f_tgk, "TGK'")
                own += [mpk_rf, tgk]
                items.append(mikey.KeyData(mikey.KEY_MPK, mpk_rf, kv_type=mikey.KV_SPI, kv_data=(spi,)))
                tail = [
                    mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, id_r),
                    mikey.RandRole(mikey.RAND_ROLE_KMS, rand_kms),
                ]
            items.append(mikey.KeyData(mikey.KEY_TGK, tgk, kv_type=mikey.KV_SPI, kv_data=(tk.tgk_spi,)))
            body = self._respond(raw, msg, mikey.DT_RESOLVE_RESP, psk, None, rand_r, [], items, tail + extra)
        finally:
            for k in own:
                k.zeroize()
        self.stats.resolves += 1
        return body

    def modifier_rand(self) -> bytes:
        """RANDRkms of a forked resolve (4.2.3.5): fresh for every RESOLVE_RESP, so terminals
        sharing one identity (IDRr) still get different MPKr' and TGK' (docs/kms.md "Key forking")."""
        return os.urandom(protect.RAND_LEN)

    def _check_initiator_data(self, ticket: mikey.Ticket, mpk_r: Secret) -> None:
        """RFC 6043 4.2.3.4: with key forking, Vr of the Initiator Data must verify under MPKr."""
        try:
            vs = [p for p in ticket.initiator_payloads() if isinstance(p, mikey.Verification)]
        except MikeyError:
            vs = []
        if len(vs) != 2:
            raise _Refuse(mikey.ERR_INVALID_TICKET, "a forking ticket needs Initiator Data (Vi, Vr)")
        fam = protect.family(ticket.prf_func)
        key = Secret(
            mikey_prf.initiator_data_auth_key(mpk_r.reveal(), ticket.prf_func, fam.auth_len), "auth_key"
        )
        try:
            covered = ticket.initiator_data[: len(ticket.initiator_data) - len(vs[1].mac)]
            if (
                vs[1].mac_alg != fam.mac_alg
                or protect.mac(protect.MessageKeys(key, key, key, fam), covered) != vs[1].mac
            ):
                raise _Refuse(mikey.ERR_INVALID_MAC, "Initiator Data does not verify under MPKr")
        finally:
            key.zeroize()

    def _respond(
        self,
        request_raw: bytes,
        req: mikey.Message,
        data_type: int,
        psk: Secret,
        rand_i: bytes | None,
        rand_r: bytes | None,
        before: list[mikey.Payload],
        items: list[mikey.KeyData],
        after: list[mikey.Payload],
    ) -> bytes:
        """HDR, T, IDRkms, [TICKET], KEMAC, [IDRr, RANDRkms], V with the MAC over response ||
        request (5.5) under the response keys (5.1.2, direction 0x02)."""
        h = req.header
        hdr = mikey.Header(data_type, h.csb_id, h.prf_func, False, h.cs_map_type, h.cs_map, h.version)
        keys = protect.MessageKeys.derive(psk, h.csb_id, mikey_prf.DIR_RESPONSE, rand_i, rand_r, h.prf_func)
        try:
            t = protect.timestamp(self.clock())
            kemac = protect.seal_kemac(keys, h.csb_id, t, items)
            payloads: list[mikey.Payload] = [
                t,
                mikey.IdRole(mikey.ROLE_KMS, mikey.ID_NAI, self.kms_id.encode()),
                *before,
                kemac,
                *after,
            ]
            return protect.sign(mikey.Message(hdr, payloads), keys, request_raw)
        finally:
            keys.zeroize()

    def _replay(self, csb_id: int, rand: bytes) -> None:
        now = self.clock()
        for k in [k for k, exp in self._seen.items() if exp <= now]:
            del self._seen[k]
        if (csb_id, rand) in self._seen:
            raise _Refuse(mikey.ERR_INVALID_TS, "request already seen (replay)")
        self._seen[(csb_id, rand)] = now + 2 * self.skew

    # -- refusals

    def _refusal(
        self, req: mikey.Message | None, keys: protect.MessageKeys | None, err_no: int, reason: str
    ) -> bytes:
        """Error message = HDR, T, ERR, [V] (RFC 6043 5.4): version, PRF func and CSB ID of the
        request, V flag 0, fresh T; MAC (over the Error message only) under the request's auth_key."""
        self.stats.refusals[reason] = self.stats.refusals.get(reason, 0) + 1
        csb = req.header.csb_id if req else 0
        prf = (
            req.header.prf_func if req and req.header.prf_func in protect.FAMILIES else mikey.PRF_HMAC_SHA_256
        )
        msg = mikey.Message(
            mikey.Header(mikey.DT_ERROR, csb, prf, False, mikey.MAP_EMPTY),
            [protect.timestamp(self.clock()), mikey.Error(err_no)],
        )
        if keys is not None and req is not None:
            return protect.sign(msg, keys)
        return msg.encode()
