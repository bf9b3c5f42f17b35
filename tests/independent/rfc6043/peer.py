"""A MIKEY-TICKET user (RFC 6043 4.2): Initiator side (REQUEST_INIT, TRANSFER_INIT) and Responder side
(RESOLVE_INIT, TRANSFER_RESP), PSK variants, written from the text."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import algs, prf
from .errors import reject
from .initiator_data import build_initiator_data
from .keys import check_key_data, decrypt_kemac, protection_keys
from .messages import Decoded, decode, mac_input, verify_mac
from .ntp import ntp_utc, tr
from .session import CsKeys, check_transfer, derive_cs_keys, fork
from .ticket import default_algorithms
from .wire import (
    DT_ERROR,
    DT_REQUEST_INIT_PSK,
    DT_REQUEST_RESP,
    DT_RESOLVE_INIT_PSK,
    DT_RESOLVE_RESP,
    DT_TRANSFER_INIT,
    DT_TRANSFER_RESP,
    IDR,
    IDR_I,
    IDR_KMS,
    IDR_PSK,
    IDR_R,
    MAP_EMPTY,
    MAP_GENERIC_ID,
    PROT_SRTP,
    RANDR_I,
    RANDR_KMS,
    RANDR_R,
    SP,
    TP,
    TR_END,
    Err,
    Flags,
    GenericCs,
    Header,
    Kemac,
    KeyData,
    Payload,
    PolicyHead,
    RandR,
    T,
    Ticket,
    V,
    decode_structure,
    encode_inner_chain,
    encode_message,
)


@dataclass(frozen=True)
class IssuedTicket:
    """What the Initiator keeps from REQUEST_RESP (4.2.1.6)."""

    ticket: Ticket
    mpki: bytes
    mpkr: bytes | None
    session_keys: tuple[KeyData, ...]
    iv_reading: str

    def __repr__(self) -> str:
        return f"IssuedTicket(flags={self.ticket.head.flags}, keys={len(self.session_keys)})"


@dataclass(frozen=True)
class Resolved:
    """What the Responder learns from RESOLVE_RESP (4.2.3.6)."""

    mpki: bytes
    mpkr_forked: bytes | None
    session_keys: tuple[KeyData, ...]
    idrr: IDR | None
    randrkms: bytes | None
    iv_reading: str

    def __repr__(self) -> str:
        return f"Resolved(keys={len(self.session_keys)}, forked={self.mpkr_forked is not None})"


class MikeyErrorReceived(Exception):
    def __init__(self, err_nos: list[int]) -> None:
        self.err_nos = err_nos
        super().__init__(f"peer answered with an Error message, Error no {err_nos}")


def _sign(h: Header, body: list[Payload], mac_alg: int, key: bytes, tail: bytes) -> bytes:
    n = algs.MAC_ALGS[mac_alg][0]
    raw = encode_message(h, [*body, V(mac_alg, bytes(n))])
    return raw[:-n] + algs.compute_mac(mac_alg, key, raw[:-n] + tail)


def _raise_if_error(raw: bytes) -> None:
    if len(raw) > 1 and raw[1] == DT_ERROR:
        d = decode(raw)
        raise MikeyErrorReceived([p.error_no for p in d.msg.payloads if isinstance(p, Err)])


class Peer:
    """One user with a pre-shared key towards the KMS (TS 33.328: Ks_NAF, psk_id = the B-TID)."""

    def __init__(
        self,
        identity: bytes,
        psk: bytes,
        *,
        psk_id: bytes | None = None,
        kms_identity: bytes | None = None,
        prf_func: int = prf.PRF_HMAC_SHA_256,
        id_type: int = 1,
        now: Callable[[], float] = time.time,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.identity = identity
        self._psk = psk
        self.psk_id = psk_id
        self.kms_identity = kms_identity
        self.prf_func = prf_func
        self.id_type = id_type
        self._now = now
        self._random = random
        self.mac_alg = default_algorithms(prf_func)[1]

    def __repr__(self) -> str:
        return f"Peer({self.identity!r})"

    def _rand(self, n: int = 32) -> bytes:
        return self._random(max(n, len(self._psk)))

    def _own_kms_payloads(self, own_role: int) -> list[Payload]:
        out: list[Payload] = [IDR(own_role, self.id_type, self.identity)]
        if self.kms_identity is not None:
            out.append(IDR(IDR_KMS, self.id_type, self.kms_identity))
        return out

    # ---------------------------------------------------------------------------------------- Ticket Request

    def request_init(
        self,
        responders: list[bytes],
        *,
        flags: Flags | None = None,
        csb_id: int | None = None,
        validity: int | None = 3600,
        requested_keys: list[KeyData] | None = None,
    ) -> bytes:
        """REQUEST_INIT_PSK = HDR, T, RANDRi, [IDRi], [IDRkms], TP, [IDRpsk], V (4.2.1)."""
        flags = flags or Flags(
            D=True, E=True, F=True, G=True, H=True, I=False, J=True, L=False, M=False, N=True, O=True
        )
        now = self._now()
        tp_payloads: list[Payload] = []
        if validity is not None:
            tp_payloads.append(tr(TR_END, now + validity))
        if requested_keys:
            tp_payloads.append(
                Kemac(
                    algs.ENC_NULL,
                    b"".join(
                        bytes([20 if i + 1 < len(requested_keys) else 0]) + k.body()
                        for i, k in enumerate(requested_keys)
                    ),
                    algs.MAC_NULL,
                    b"",
                )
            )
        tp_payloads += [IDR(IDR_R, self.id_type, r) for r in responders]
        tp = TP(PolicyHead(1, 1, 1, self.prf_func, flags), encode_inner_chain(tp_payloads))
        h = Header(
            DT_REQUEST_INIT_PSK,
            csb_id if csb_id is not None else int.from_bytes(self._random(4), "big"),
            self.prf_func,
            True,
            MAP_EMPTY,
        )
        randri = self._rand()
        body: list[Payload] = [ntp_utc(now), RandR(RANDR_I, randri), *self._own_kms_payloads(IDR_I), tp]
        if self.psk_id is not None:
            body.append(IDR(IDR_PSK, 2, self.psk_id))
        k1 = protection_keys(self.prf_func, self._psk, h.csb_id, 1, randri, None, mac_alg=self.mac_alg)
        return _sign(h, body, self.mac_alg, k1.auth, self.identity + (self.kms_identity or b""))

    def accept_request_resp(self, request_init: bytes, response: bytes) -> IssuedTicket:
        _raise_if_error(response)
        ri = decode(request_init)
        rr = decode(response, initial=ri)
        if rr.msg.header.data_type != DT_REQUEST_RESP:
            raise reject("rfc6043.peer.unexpected", "RFC 6043 4.2.1", f"{rr.name} in answer to REQUEST_INIT")
        randri = ri.get("RANDRi")
        assert isinstance(randri, RandR)
        h = rr.msg.header
        v = rr.msg.payloads[-1]
        kem = rr.get("KEMAC")
        ticket = rr.get("TICKET")
        assert isinstance(v, V) and isinstance(kem, Kemac) and isinstance(ticket, Ticket)
        k2 = protection_keys(
            h.prf_func, self._psk, h.csb_id, 2, randri.rand, None, mac_alg=v.mac_alg, encr_alg=kem.encr_alg
        )
        verify_mac(rr, k2.auth, initial_raw=ri.raw)
        t_resp, t_req = rr.get("T"), ri.get("T")
        assert isinstance(t_resp, T) and isinstance(t_req, T)
        keys, reading = decrypt_kemac(
            kem, k2, h.csb_id, [("REQUEST_RESP T", t_resp), ("REQUEST_INIT T", t_req)]
        )
        n_mpk = 2 if ticket.head.flags.I else 1
        check_key_data(
            keys,
            "REQUEST_RESP KEMAC",
            mpks=(n_mpk, n_mpk),
            algorithms=[("prf", h.prf_func), ("encr", kem.encr_alg)],
        )
        return IssuedTicket(
            ticket, keys[0].key, keys[1].key if n_mpk == 2 else None, tuple(keys[n_mpk:]), reading
        )

    # ---------------------------------------------------------------------------------------- Ticket Transfer

    def transfer_init(
        self,
        issued: IssuedTicket,
        *,
        responder: bytes | None,
        sessions: list[GenericCs],
        sps: list[SP],
        csb_id: int | None = None,
        include_idri: bool = True,
        extra_payloads: list[Payload] | None = None,
        mac_identities: tuple[bytes, bytes] | None = None,
    ) -> bytes:
        """TRANSFER_INIT = HDR, T, RANDRi, [IDRi], [IDRr], {SP}, TICKET, [KEMAC], V (4.2.2)."""
        f = issued.ticket.head.flags
        h = Header(
            DT_TRANSFER_INIT,
            csb_id if csb_id is not None else int.from_bytes(self._random(4), "big"),
            self.prf_func,
            f.F,
            MAP_GENERIC_ID,
            tuple(sessions),
        )
        randri = self._random(max(32, len(issued.mpki), *(len(k.key) for k in issued.session_keys)))
        body: list[Payload] = [ntp_utc(self._now()), RandR(RANDR_I, randri)]
        if include_idri:
            body.append(IDR(IDR_I, self.id_type, self.identity))
        if responder is not None:
            body.append(IDR(IDR_R, self.id_type, responder))
        ticket = issued.ticket.without_initiator_data()
        body += [*sps, *(extra_payloads or []), ticket]
        k1 = protection_keys(h.prf_func, issued.mpki, h.csb_id, 1, randri, None, mac_alg=self.mac_alg)
        # 5.5: Identity_i || Identity_r; for an IDR left out (4.2.2.1 MAY) the text does not say what is
        # covered: by default the empty string, mac_identities= gives the identities "known by other means".
        ids = mac_identities or (self.identity if include_idri else b"", responder or b"")
        n = algs.MAC_ALGS[self.mac_alg][0]
        unsigned = encode_message(h, [*body, V(self.mac_alg, bytes(n))])
        # 5.5: the MAC does not cover the Initiator Data length and Initiator Data fields of the TICKET.
        m = decode_structure(unsigned)
        pre = Decoded(
            m, {"TICKET": [p for p in m.payloads if isinstance(p, Ticket)]}, "before Initiator Data"
        )
        tag = algs.compute_mac(self.mac_alg, k1.auth, mac_input(pre, identities=ids))
        raw = unsigned[:-n] + tag
        if not f.I:
            return raw
        # 6.10: with key forking the Initiator inserts Initiator Data = Vi (its V payload), Vr (MAC, MPKr).
        if issued.mpkr is None:
            raise ValueError("key forking needs MPKr")
        vi = V(self.mac_alg, tag)
        idata = build_initiator_data(vi, issued.mpkr, ticket.head.prf_func)
        body[body.index(ticket)] = replace(ticket, initiator_data=idata)
        return encode_message(h, [*body, vi])

    def accept_transfer_resp(
        self, transfer_init: bytes, transfer_resp: bytes, issued: IssuedTicket
    ) -> list[CsKeys]:
        _raise_if_error(transfer_resp)
        tk = check_transfer(
            transfer_init,
            transfer_resp,
            ticket_prf=issued.ticket.head.prf_func,
            mpki=issued.mpki,
            mpkr=issued.mpkr,
            session_keys=issued.session_keys,
            initiator_ids=[self.identity],
        )
        return tk.cs_keys

    def initiator_keys_without_response(self, transfer_init: bytes, issued: IssuedTicket) -> list[CsKeys]:
        """F flag '0': no TRANSFER_RESP; keys from the TRANSFER_INIT alone (RANDRi must be used: H)."""
        return check_transfer(
            transfer_init,
            None,
            ticket_prf=issued.ticket.head.prf_func,
            mpki=issued.mpki,
            mpkr=issued.mpkr,
            session_keys=issued.session_keys,
            initiator_ids=[self.identity],
        ).cs_keys

    # ---------------------------------------------------------------------------------------- Ticket Resolve

    def resolve_init(self, transfer_init: bytes, *, csb_id: int | None = None) -> bytes:
        """RESOLVE_INIT_PSK = HDR, T, RANDRr, [IDRr], [IDRkms], TICKET, [IDRpsk], V (4.2.3). The TICKET is
        forwarded as received (with its Initiator Data, which the KMS verifies when I is set)."""
        ti = decode(transfer_init)
        ticket = ti.get("TICKET")
        if not isinstance(ticket, Ticket):
            raise reject("rfc6043.transfer.no_ticket", "RFC 6043 4.2.2.1", "TRANSFER_INIT without TICKET")
        h = Header(
            DT_RESOLVE_INIT_PSK,
            csb_id if csb_id is not None else int.from_bytes(self._random(4), "big"),
            self.prf_func,
            True,
            MAP_EMPTY,
        )
        randrr = self._rand()
        body: list[Payload] = [
            ntp_utc(self._now()),
            RandR(RANDR_R, randrr),
            *self._own_kms_payloads(IDR_R),
            ticket,
        ]
        if self.psk_id is not None:
            body.append(IDR(IDR_PSK, 2, self.psk_id))
        k1 = protection_keys(self.prf_func, self._psk, h.csb_id, 1, None, randrr, mac_alg=self.mac_alg)
        return _sign(h, body, self.mac_alg, k1.auth, self.identity + (self.kms_identity or b""))

    def accept_resolve_resp(self, resolve_init: bytes, response: bytes) -> Resolved:
        _raise_if_error(response)
        ri = decode(resolve_init)
        rr = decode(response, initial=ri)
        if rr.msg.header.data_type != DT_RESOLVE_RESP:
            raise reject("rfc6043.peer.unexpected", "RFC 6043 4.2.3", f"{rr.name} in answer to RESOLVE_INIT")
        randrr = ri.get("RANDRr")
        ticket = ri.get("TICKET")
        h = rr.msg.header
        v = rr.msg.payloads[-1]
        kem = rr.get("KEMAC")
        assert isinstance(randrr, RandR) and isinstance(v, V) and isinstance(kem, Kemac)
        assert isinstance(ticket, Ticket)
        k2 = protection_keys(
            h.prf_func, self._psk, h.csb_id, 2, None, randrr.rand, mac_alg=v.mac_alg, encr_alg=kem.encr_alg
        )
        verify_mac(rr, k2.auth, initial_raw=ri.raw)
        t_resp, t_req = rr.get("T"), ri.get("T")
        assert isinstance(t_resp, T) and isinstance(t_req, T)
        keys, reading = decrypt_kemac(
            kem, k2, h.csb_id, [("RESOLVE_RESP T", t_resp), ("RESOLVE_INIT T", t_req)]
        )
        forked = ticket.head.flags.I
        n_mpk = 2 if forked else 1
        check_key_data(
            keys,
            "RESOLVE_RESP KEMAC",
            mpks=(n_mpk, n_mpk),
            algorithms=[("prf", h.prf_func), ("encr", kem.encr_alg)],
        )
        idrr, rkms = rr.get("IDRr"), rr.get("RANDRkms")
        if forked and not (isinstance(idrr, IDR) and isinstance(rkms, RandR)):
            raise reject(
                "rfc6043.resolve.modifier",
                "RFC 6043 4.2.3.5",
                "key forking: the modifier SHALL be included in the IDRr and RANDRkms payloads",
            )
        return Resolved(
            keys[0].key,
            keys[1].key if forked else None,
            tuple(keys[n_mpk:]),
            idrr if isinstance(idrr, IDR) else None,
            rkms.rand if isinstance(rkms, RandR) else None,
            reading,
        )

    def respond(
        self,
        transfer_init: bytes,
        kms: Callable[[bytes], bytes],
        *,
        my_ssrcs: dict[int, int] | None = None,
        added: list[GenericCs] | None = None,
        my_sp: SP | None = None,
    ) -> tuple[bytes | None, list[CsKeys]]:
        """Responder: early checks, RESOLVE through `kms`, verify TRANSFER_INIT with MPKi (and Vi if forking),
        build TRANSFER_RESP when the F flag asks for one. Returns (TRANSFER_RESP or None, keys per CS)."""
        ti = decode(transfer_init)
        ticket = ti.get("TICKET")
        if not isinstance(ticket, Ticket):
            raise reject("rfc6043.transfer.no_ticket", "RFC 6043 4.2.2.1", "TRANSFER_INIT without TICKET")
        f = ticket.head.flags
        ri = self.resolve_init(transfer_init)
        res = self.accept_resolve_resp(ri, kms(ri))
        h = ti.msg.header
        v = ti.msg.payloads[-1]
        randri_p = ti.get("RANDRi")
        assert isinstance(v, V) and isinstance(randri_p, RandR)
        k1 = protection_keys(h.prf_func, res.mpki, h.csb_id, 1, randri_p.rand, None, mac_alg=v.mac_alg)
        tp_idri = [p.data for p in ticket.tp_payloads if isinstance(p, IDR) and p.role == IDR_I]
        verify_mac(ti, k1.auth, fallback_ids={IDR_I: tp_idri, IDR_R: [self.identity]})
        if f.I:
            vi = ticket.initiator_payloads[0]
            if not isinstance(vi, V) or (vi.mac_alg, vi.mac) != (v.mac_alg, v.mac):
                raise reject(
                    "rfc6043.transfer.vi",
                    "RFC 6043 4.2.3.6",
                    "the MAC of the TRANSFER_INIT V payload differs from Vi in the Initiator Data",
                )
        sps = [p for p in ti.msg.payloads if isinstance(p, SP)]
        randrr = self._random(max(32, len(res.mpki))) if f.G else None
        cs_map: list[GenericCs] = []
        extra_sps: list[SP] = []
        known_nos = {sp.policy_no for sp in sps}
        for cs in [c for c in h.cs_map if isinstance(c, GenericCs)] + list(added or []):
            pols = cs.policies[:1]
            if not pols:  # 6.1.1: #P = 0 in the initial message -> a policy MUST be provided in the response
                sp = my_sp or SP(max(known_nos | {0}) + 1, cs.prot_type, ())
                if sp.policy_no not in {s.policy_no for s in extra_sps}:
                    extra_sps.append(sp)
                pols = (sp.policy_no,)
            sd = cs.session_data
            if cs.prot_type == PROT_SRTP and not sd:
                ssrc = (my_ssrcs or {}).get(cs.cs_id, int.from_bytes(self._random(4), "big"))
                sd = ssrc.to_bytes(4, "big")
            spi = cs.spi or (res.session_keys[0].spi if res.session_keys else b"\x00")
            cs_map.append(
                replace(
                    cs, policies=pols, session_data=sd, spi=spi, s_flag=cs.s_flag if len(sd) == 10 else False
                )
            )
        keys = list(res.session_keys)
        auth_in = res.mpki
        if f.I:
            assert res.idrr is not None and res.randrkms is not None and res.mpkr_forked is not None
            auth_in = res.mpkr_forked
        cs_keys = derive_cs_keys(
            h.prf_func, cs_map, sps + extra_sps, keys, randri_p.rand if f.H else None, randrr
        )
        if not f.F:
            return None, cs_keys
        rh = Header(DT_TRANSFER_RESP, h.csb_id, h.prf_func, False, MAP_GENERIC_ID, tuple(cs_map), h.version)
        body: list[Payload] = [ntp_utc(self._now())]
        if randrr is not None:
            body.append(RandR(RANDR_R, randrr))
        if res.idrr is not None:
            body.append(res.idrr)
        if res.randrkms is not None:
            body.append(RandR(RANDR_KMS, res.randrkms))
        body += extra_sps
        k2 = protection_keys(h.prf_func, auth_in, h.csb_id, 2, randri_p.rand, randrr, mac_alg=v.mac_alg)
        return _sign(rh, body, v.mac_alg, k2.auth, ti.raw), cs_keys


def srtp_cs(
    cs_id: int, *, ssrc: int | None = None, policies: tuple[int, ...] = (), spi: bytes = b""
) -> GenericCs:
    """A GENERIC-ID block for SRTP (6.1.1); ssrc None = left for the Responder to fill in."""
    sd = ssrc.to_bytes(4, "big") if ssrc is not None else b""
    return GenericCs(cs_id, PROT_SRTP, False, policies, sd, spi)


__all__ = [
    "Peer",
    "IssuedTicket",
    "Resolved",
    "MikeyErrorReceived",
    "srtp_cs",
    "Decoded",
    "fork",
    "DT_REQUEST_RESP",
    "DT_TRANSFER_RESP",
    "DT_TRANSFER_INIT",
    "DT_RESOLVE_RESP",
]
