"""The UE's side of MIKEY-TICKET (RFC 6043), sans-IO: build and check every message, derive the keys.

Initiator: ``build_request_init`` -> (KMS) -> ``read_request_resp`` -> ``build_transfer_init``
-> (peer) -> ``complete``. Responder: ``inspect_transfer_init`` -> ``build_resolve_init`` ->
(KMS) -> ``read_resolve_resp`` -> ``accept_transfer_init``. Bytes in, bytes out; the clock is
a parameter. Message contents and every choice the RFC leaves open: docs/kms.md.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ue_agent.crypto import mikey_prf
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, streams, ts33328
from ue_agent.secret import Secret

RAND_LEN = protect.RAND_LEN

# Ticket Policy flags this profile asks for (RFC 6043 6.10): KMS-generated ticket, resolve
# mandatory, TRANSFER_RESP sent, RANDRr (G), RANDRi in the TEK (H), key forking (I), reuse (J),
# no initiator/responder-supplied keys (L, M clear), plain RFC 6043 processing (N, O).
FLAGS_FORKED = (
    mikey.F_D | mikey.F_E | mikey.F_F | mikey.F_G | mikey.F_H | mikey.F_I | mikey.F_J | mikey.F_N | mikey.F_O
)
# A group ticket: the same TGK for every member, hence no forking and no RANDRr (RFC 6043 9).
FLAGS_GROUP = mikey.F_D | mikey.F_E | mikey.F_F | mikey.F_H | mikey.F_J | mikey.F_N | mikey.F_O

_ERR_CODES = {
    mikey.ERR_TICKET_EXPIRED: ("kms.ticket_expired", "the KMS says the ticket has expired"),
    mikey.ERR_NOT_AUTHORIZED: (
        "kms.not_authorized",
        "the KMS refused: identity outside the ticket's recipients",
    ),
    mikey.ERR_INVALID_ID: ("kms.not_authorized", "the KMS refused the identity"),
    mikey.ERR_INVALID_TICKET: ("kms.ticket_rejected", "the KMS rejected the ticket"),
    mikey.ERR_AUTH_FAILURE: ("kms.ticket_rejected", "the KMS could not authenticate the request"),
    mikey.ERR_INVALID_MAC: ("kms.ticket_rejected", "the KMS found a MAC that does not verify"),
    mikey.ERR_INVALID_TS: ("kms.ticket_rejected", "the KMS refused the request's timestamp"),
    mikey.ERR_INVALID_TPPAR: ("kms.bad_request", "the KMS does not support the ticket policy"),
}


# ---------------------------------------------------------------------------- state objects


@dataclass
class Sent:
    """A message as sent: its bytes (a response's MAC covers them) and its payloads."""

    raw: bytes
    msg: mikey.Message


@dataclass(repr=False)
class IssuedTicket:
    """A ticket the initiator holds with the keys of REQUEST_RESP (reused until expiry)."""

    ticket: mikey.Ticket
    mpk_i: Secret
    mpk_r: Secret | None  # with key forking (I flag)
    tgk: Secret
    tgk_spi: bytes
    expiry: float
    prf_func: int

    @property
    def flags(self) -> int:
        return self.ticket.flags

    @property
    def group(self) -> bool:
        return not self.ticket.flag(mikey.F_I)

    def zeroize(self) -> None:
        for k in (self.mpk_i, self.mpk_r, self.tgk):
            if k is not None:
                k.zeroize()

    def __repr__(self) -> str:
        return f"<IssuedTicket expiry={self.expiry:.0f} flags={mikey.flag_text(self.flags)}>"


@dataclass(repr=False)
class ResolvedTicket:
    """What the KMS gave a responder for one ticket (kept for reuse with the same modifier, 5.3)."""

    mpk_i: Secret
    mpk_r: Secret | None  # MPKr' with key forking
    tgk: Secret  # TGK' with key forking
    tgk_spi: bytes
    id_r: bytes | None  # the modifier (IDRr, RANDRkms) of RESOLVE_RESP
    rand_kms: bytes | None
    initiator: str
    expiry: float
    flags: int
    prf_func: int
    #: the General Extensions of RESOLVE_RESP (diversion, anonymity: kms/divert.py, kms/anonymity.py)
    extensions: list[mikey.GeneralExt] = field(default_factory=list)

    @property
    def group(self) -> bool:
        return not self.flags & mikey.F_I

    def zeroize(self) -> None:
        for k in (self.mpk_i, self.mpk_r, self.tgk):
            if k is not None:
                k.zeroize()

    def __repr__(self) -> str:
        return f"<ResolvedTicket initiator={self.initiator} expiry={self.expiry:.0f}>"


@dataclass(repr=False)
class PendingOffer:
    """The initiator's state between TRANSFER_INIT and TRANSFER_RESP (one per offer)."""

    own: str
    peer: str
    issued: IssuedTicket
    transfer_init: bytes
    message: mikey.Message
    plan: list[streams.StreamCs]
    rand_i: bytes

    @property
    def streams(self) -> list[streams.Stream]:
        return [s.stream for s in self.plan]

    def __repr__(self) -> str:
        return f"<PendingOffer {self.own} -> {self.peer} csb_id={self.message.header.csb_id:#010x}>"


@dataclass
class TransferInit:
    """A received TRANSFER_INIT, parsed and checked for policy but not yet verified."""

    raw: bytes
    message: mikey.Message
    ticket: mikey.Ticket
    initiator: str | None  # IDRi, canonical (None: absent)
    responder: str | None  # IDRr, canonical (None: absent)
    plan: list[streams.StreamCs]
    rand_i: bytes

    @property
    def ticket_ref(self) -> bytes:
        return self.ticket.ticket_data

    @property
    def streams(self) -> list[streams.Stream]:
        return [s.stream for s in self.plan]


@dataclass
class ReplayCache:
    """TRANSFER_INITs already accepted (by CSB ID and RANDRi) within the freshness window (12.4)."""

    window: float = 300.0
    _seen: dict[tuple[int, bytes], float] = field(default_factory=dict)

    def check(self, ti: TransferInit, now: float) -> None:
        for k in [k for k, exp in self._seen.items() if exp <= now]:
            del self._seen[k]
        if (ti.message.header.csb_id, ti.rand_i) in self._seen:
            raise MikeyError("mikey.replay", "TRANSFER_INIT already seen (replay)")

    def remember(self, ti: TransferInit, now: float) -> None:
        self._seen[(ti.message.header.csb_id, ti.rand_i)] = now + 2 * self.window

    def remember_until(self, ti: TransferInit, until: float, now: float) -> None:
        """Keep ``ti`` refused until ``until`` (a stored TRANSFER_INIT: its ticket's TRe), and
        at least as long as :meth:`remember` would."""
        key = (ti.message.header.csb_id, ti.rand_i)
        self._seen[key] = max(until, now + 2 * self.window, self._seen.get(key, 0.0))


# ---------------------------------------------------------------------------- helpers


def _csb_id() -> int:
    return int.from_bytes(os.urandom(4), "big")


def _idr(role: int, text: str, id_type: int = mikey.ID_URI) -> mikey.IdRole:
    return mikey.IdRole(role, id_type, text.encode("utf-8"))


def _kms_idr(kms_id: str) -> mikey.IdRole:
    return _idr(mikey.ROLE_KMS, kms_id, mikey.ID_NAI)


def ticket_initiator(ticket: mikey.TicketPolicy) -> str:
    idr = ticket.policy_first(mikey.IdRole, mikey.ROLE_I)
    if idr is None:
        raise MikeyError("mikey.malformed", "the granted Ticket Policy names no initiator (IDRi)")
    return ids.canonical(idr.text)


def ticket_expiry(ticket: mikey.TicketPolicy) -> float:
    tre = ticket.policy_first(mikey.TimestampRole, mikey.TS_ROLE_EXPIRY)
    return protect.unix_of(tre) if tre is not None else float("inf")


def _fork_pair(
    mpk_r: Secret, tgk: Secret, id_r: bytes, rand_kms: bytes, prf_func: int
) -> tuple[Secret, Secret]:
    """(MPKr', TGK') by RFC 6043 5.1.1."""
    return (
        Secret(mikey_prf.fork(mpk_r.reveal(), mikey_prf.FORK_MPKR_CONST, id_r, rand_kms, prf_func), "MPKr'"),
        Secret(mikey_prf.fork(tgk.reveal(), mikey_prf.FORK_TGK_CONST, id_r, rand_kms, prf_func), "TGK'"),
    )


def _derivation(
    tgk: Secret, flags: int, rand_i: bytes, rand_r: bytes | None, prf_func: int, csb_id: int
) -> streams.Derivation:
    return streams.Derivation(
        tgk,
        rand_i if flags & mikey.F_H else None,
        rand_r if flags & mikey.F_G else None,
        prf_func,
        csb_id,
        rand_i,
        protect.family(prf_func).key_len,
    )


def _sessions(cs_map: dict[int, mikey.GenericCs]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for cs_id, cs in cs_map.items():
        if cs.prot_type == mikey.PROT_SRTP:
            s = streams.srtp_session(cs)
            if s is not None:
                out[cs_id] = s
    return out


# ---------------------------------------------------------------------------- UE <-> KMS


def build_request_init(
    own: str,
    recipients: list[str],
    btid: str,
    psk: Secret,
    kms_id: str,
    *,
    validity: int = 0,
    group: bool = False,
    now: float | None = None,
    prf_func: int = mikey.PRF_HMAC_SHA_256,
    extra: Sequence[mikey.Payload] = (),
    flags: int | None = None,
) -> Sent:
    """REQUEST_INIT_PSK (RFC 6043 4.2.1): HDR, T, RANDRi, IDRi, IDRkms, TP, IDRpsk, V.
    ``flags``: the desired Ticket Policy flags (default: forked, or group with ``group``)."""
    if not recipients:
        raise KmsError("kms.bad_request", "a ticket needs at least one recipient")
    now = time.time() if now is None else now
    # 4.2.1.1: V flag '1', #CS 0, Empty map (RFC 4563)
    hdr = mikey.Header(mikey.DT_REQUEST_INIT_PSK, _csb_id(), prf_func, True, mikey.MAP_EMPTY)
    rand_i = os.urandom(RAND_LEN)
    own_c = ids.canonical(own)
    tp_data: list[mikey.Payload] = []
    if validity:
        tp_data.append(protect.tr(mikey.TS_ROLE_EXPIRY, now + validity))
    tp_data += [_idr(mikey.ROLE_R, ids.pattern(r)) for r in recipients]
    tp = mikey.TicketPolicy(
        mikey.TICKET_MIKEY_BASE,
        mikey.BASE_SUBTYPE,
        mikey.BASE_VERSION,
        prf_func,
        flags if flags is not None else FLAGS_GROUP if group else FLAGS_FORKED,
        tp_data,
    )
    msg = mikey.Message(
        hdr,
        [
            protect.timestamp(now),
            mikey.RandRole(mikey.RAND_ROLE_I, rand_i),
            _idr(mikey.ROLE_I, own_c),
            _kms_idr(kms_id),
            tp,
            _idr(mikey.ROLE_PSK, btid, ts33328.PSK_ID_TYPE),
            *extra,
        ],
    )
    keys = protect.MessageKeys.derive(psk, hdr.csb_id, mikey_prf.DIR_INITIAL, rand_i, None, prf_func)
    try:
        raw = protect.sign(msg, keys, own_c.encode() + kms_id.encode())  # 5.5: || Identity_i || Identity_kms
    finally:
        keys.zeroize()
    return Sent(raw, msg)


def build_resolve_init(
    own: str,
    ti: TransferInit,
    btid: str,
    psk: Secret,
    kms_id: str,
    *,
    divert_to: str | None = None,
    now: float | None = None,
    prf_func: int | None = None,
    extra: Sequence[mikey.Payload] = (),
) -> Sent:
    """RESOLVE_INIT_PSK (RFC 6043 4.2.3): HDR, T, RANDRr, IDRr, IDRkms, TICKET, IDRpsk, [ext], V.

    The PRF (and so the algorithm family) is the ticket's unless given: one message never mixes
    the 128- and 256-bit families (12.1), the TICKET's PRF Func included."""
    if prf_func is None:
        prf_func = ti.ticket.prf_func
    hdr = mikey.Header(mikey.DT_RESOLVE_INIT_PSK, _csb_id(), prf_func, True, mikey.MAP_EMPTY)
    rand_r = os.urandom(RAND_LEN)
    own_c = ids.canonical(own)
    payloads: list[mikey.Payload] = [
        protect.timestamp(now),
        mikey.RandRole(mikey.RAND_ROLE_R, rand_r),
        _idr(mikey.ROLE_R, own_c),
        _kms_idr(kms_id),
        ti.ticket,
        _idr(mikey.ROLE_PSK, btid, ts33328.PSK_ID_TYPE),
    ]
    if divert_to is not None:
        payloads.append(mikey.GeneralExt(mikey.EXT_DIVERT, ids.canonical(divert_to).encode()))
    payloads += extra
    msg = mikey.Message(hdr, payloads)
    keys = protect.MessageKeys.derive(psk, hdr.csb_id, mikey_prf.DIR_INITIAL, None, rand_r, prf_func)
    try:
        raw = protect.sign(msg, keys, own_c.encode() + kms_id.encode())  # || Identity_r || Identity_kms
    finally:
        keys.zeroize()
    return Sent(raw, msg)


def _request_rands(sent: Sent) -> tuple[bytes | None, bytes | None]:
    ri = sent.msg.first(mikey.RandRole, mikey.RAND_ROLE_I)
    rr = sent.msg.first(mikey.RandRole, mikey.RAND_ROLE_R)
    return (ri.rand if ri else None), (rr.rand if rr else None)


def read_kms_reply(
    status: int, raw: bytes, sent: Sent, psk: Secret, expect: int, kms_id: str
) -> tuple[mikey.Message, protect.MessageKeys]:
    """Decode and verify a KMS reply (RFC 6043 5.5: the MAC covers reply || request); an Error
    message (5.4, MAC over itself under the request's auth_key) becomes a ``kms.*`` error."""
    try:
        msg = mikey.Message.decode(raw)
    except MikeyError as e:
        raise KmsError(
            "kms.bad_response", f"KMS answered HTTP {status} with no valid MIKEY message", reason=e.code
        ) from None
    h = sent.msg.header
    rand_i, rand_r = _request_rands(sent)
    if msg.header.data_type == mikey.DT_ERROR:
        err = msg.first(mikey.Error)
        if err is None:
            raise KmsError("kms.bad_response", "KMS error message without an ERR payload", status=status)
        if msg.first(mikey.Verification) is None:
            # RFC 6043 5.4 lets an Error go unsigned ("MAY be authenticated"), but an unsigned
            # refusal cannot be told from one forged on the path: a network fault, not a verdict.
            raise KmsError(
                "kms.bad_response",
                "KMS error message is not authenticated (no V payload)",
                reason="unauthenticated_error",
                kms_error=err.error_no,
                status=status,
            )
        ek = protect.MessageKeys.derive(psk, h.csb_id, mikey_prf.DIR_INITIAL, rand_i, rand_r, h.prf_func)
        try:
            protect.verify(raw, msg, ek)
        except MikeyError:
            raise KmsError("kms.bad_response", "KMS error message failed verification") from None
        finally:
            ek.zeroize()
        code, text = _ERR_CODES.get(err.error_no, ("kms.ticket_rejected", "the KMS refused the request"))
        raise KmsError(code, text, kms_error=err.error_no, status=status)
    if status != 200:
        raise KmsError("kms.bad_response", f"KMS answered HTTP {status}", status=status)
    rh = msg.header
    if rh.data_type != expect or (rh.csb_id, rh.prf_func, rh.cs_map_type, rh.cs_map) != (
        h.csb_id,
        h.prf_func,
        h.cs_map_type,
        h.cs_map,
    ):
        raise KmsError("kms.bad_response", f"KMS answered with {msg.name} for another exchange")
    keys = protect.MessageKeys.derive(psk, h.csb_id, mikey_prf.DIR_RESPONSE, rand_i, rand_r, h.prf_func)
    try:
        protect.verify(raw, msg, keys, sent.raw)
    except MikeyError as e:
        keys.zeroize()
        raise KmsError("kms.bad_response", "KMS reply failed verification", reason=e.code) from None
    kms = msg.first(mikey.IdRole, mikey.ROLE_KMS)
    if kms is not None and kms.text != kms_id:
        keys.zeroize()
        raise KmsError("kms.bad_response", "reply from another KMS identity")
    return msg, keys


def _open(keys: protect.MessageKeys, msg: mikey.Message, request: mikey.Message) -> list[mikey.KeyData]:
    """Decrypt a response's KEMAC (after V verified). Which T goes into the IV is open (RFC 3830
    4.2.3 "the timestamp sent by the Initiator" vs the response's fresh T, docs/kms.md): the
    response's own T first, then the initial message's; the one giving well-formed key data wins."""
    kemac = msg.one(mikey.Kemac)
    try:
        return protect.open_kemac(keys, kemac, msg.header.csb_id, msg.one(mikey.Timestamp))
    except MikeyError as first:
        try:
            return protect.open_kemac(keys, kemac, msg.header.csb_id, request.one(mikey.Timestamp))
        except MikeyError:
            raise first from None


def _split_kemac(items: list[mikey.KeyData], forked: bool, what: str, key_len: int) -> tuple:
    """MPKi || [MPKr] || TGK|GTGK (RFC 6043 4.2.1.5, 4.2.3.5), each with an SPI (6.2.1)."""
    mpks = [k for k in items if k.key_type == mikey.KEY_MPK]
    tgks = [k for k in items if k.key_type in (mikey.KEY_TGK, mikey.KEY_GTGK)]
    if (
        len(mpks) != (2 if forked else 1)
        or len(tgks) != 1
        or any(k.spi is None for k in items)
        or any(len(k.key) != key_len for k in mpks + tgks)
    ):
        raise KmsError("kms.bad_response", f"{what} KEMAC must be MPKi || [MPKr] || TGK with SPIs")
    return mpks[0].key, (mpks[1].key if forked else None), tgks[0].key, tgks[0].spi


def read_request_resp(status: int, raw: bytes, sent: Sent, psk: Secret, kms_id: str) -> IssuedTicket:
    msg, keys = read_kms_reply(status, raw, sent, psk, mikey.DT_REQUEST_RESP, kms_id)
    try:
        ticket = msg.one(mikey.Ticket)
        if ticket.ticket_type not in ts33328.ACCEPTED_TICKET_TYPES:
            raise KmsError("kms.bad_response", "ticket type not accepted", ticket_type=ticket.ticket_type)
        if not ticket.flag(mikey.F_N):
            raise KmsError("kms.bad_response", "the ticket needs processing beyond RFC 6043 (N flag clear)")
        fam = protect.family(ticket.prf_func)
        forked = ticket.flag(mikey.F_I)
        mpk_i, mpk_r, tgk, spi = _split_kemac(_open(keys, msg, sent.msg), forked, "REQUEST_RESP", fam.key_len)
        return IssuedTicket(ticket, mpk_i, mpk_r, tgk, spi, ticket_expiry(ticket), ticket.prf_func)
    except MikeyError as e:
        raise KmsError("kms.bad_response", "malformed REQUEST_RESP", reason=e.code) from None
    finally:
        keys.zeroize()


def read_resolve_resp(status: int, raw: bytes, sent: Sent, psk: Secret, kms_id: str) -> ResolvedTicket:
    msg, keys = read_kms_reply(status, raw, sent, psk, mikey.DT_RESOLVE_RESP, kms_id)
    try:
        ticket = sent.msg.one(mikey.Ticket)
        fam = protect.family(ticket.prf_func)
        forked = ticket.flag(mikey.F_I)
        mpk_i, mpk_r, tgk, spi = _split_kemac(_open(keys, msg, sent.msg), forked, "RESOLVE_RESP", fam.key_len)
        idr = msg.first(mikey.IdRole, mikey.ROLE_R)
        rk = msg.first(mikey.RandRole, mikey.RAND_ROLE_KMS)
        if forked and (idr is None or rk is None):
            raise KmsError("kms.bad_response", "a forked RESOLVE_RESP needs the modifier IDRr and RANDRkms")
        return ResolvedTicket(
            mpk_i,
            mpk_r,
            tgk,
            spi,
            idr.data if idr else None,
            rk.rand if rk else None,
            ticket_initiator(ticket),
            ticket_expiry(ticket),
            ticket.flags,
            ticket.prf_func,
            msg.all(mikey.GeneralExt),
        )
    except MikeyError as e:
        raise KmsError("kms.bad_response", "malformed RESOLVE_RESP", reason=e.code) from None
    finally:
        keys.zeroize()


# ---------------------------------------------------------------------------- UE <-> UE


def build_transfer_init(
    issued: IssuedTicket,
    own: str,
    peer: str,
    media: list[streams.Stream],
    kms_id: str = "",
    now: float | None = None,
) -> PendingOffer:
    """TRANSFER_INIT (RFC 6043 4.2.2.1): HDR(GENERIC-ID map), T, RANDRi, IDRi, IDRr, {SP}, TICKET, V.

    A fresh CSB ID and RANDRi per session let one ticket key several sessions (5.3). With key
    forking the TICKET carries Initiator Data = Vi, Vr (6.10)."""
    now = time.time() if now is None else now
    if now >= issued.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired; request a new one")
    prf = issued.prf_func
    fam = protect.family(prf)
    # no TRANSFER_RESP (F flag clear, 6.10): nobody fills in a responder's crypto session
    one_way = not issued.ticket.flag(mikey.F_F)
    cs_map, sps, plan = streams.describe(media, issued.tgk_spi, fam.key_len, one_way=one_way)
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT, _csb_id(), prf, issued.ticket.flag(mikey.F_F), mikey.MAP_GENERIC_ID, cs_map
    )
    rand_i = os.urandom(RAND_LEN)
    own_c, peer_c = ids.canonical(own), ids.canonical(peer)
    t = issued.ticket
    ticket = mikey.Ticket(
        t.ticket_type, t.subtype, t.version, t.prf_func, t.flags, t.tp_data, t.reserved, t.ticket_data
    )
    msg = mikey.Message(
        hdr,
        [
            protect.timestamp(now),
            mikey.RandRole(mikey.RAND_ROLE_I, rand_i),
            _idr(mikey.ROLE_I, own_c),
            _idr(mikey.ROLE_R, peer_c),
            *sps,
            ticket,
        ],
    )
    keys = protect.MessageKeys.derive(issued.mpk_i, hdr.csb_id, mikey_prf.DIR_INITIAL, rand_i, None, prf)
    try:
        raw = protect.sign(msg, keys, own_c.encode() + peer_c.encode())  # || Identity_i || Identity_r
    finally:
        keys.zeroize()
    if ticket.flag(mikey.F_I):
        if issued.mpk_r is None:
            raise KmsError("kms.bad_response", "a forking ticket without MPKr")
        ticket.initiator_data = initiator_data(msg.payloads[-1], issued.mpk_r, prf)  # type: ignore[arg-type]
        raw = msg.encode()
    return PendingOffer(own_c, peer_c, issued, raw, msg, plan, rand_i)


def initiator_data(v: mikey.Verification, mpk_r: Secret, prf_func: int) -> bytes:
    """Initiator Data = First Payload, Vi, Vr (RFC 6043 6.10): Vi repeats the TRANSFER_INIT's MAC,
    Vr's MAC (auth_key from MPKr, label ... 0x04) covers the field up to its own MAC."""
    fam = protect.family(prf_func)
    vi = mikey.Verification(v.mac_alg, v.mac)
    vr = mikey.Verification(fam.mac_alg, bytes(fam.mac_len))
    blank = mikey.encode_chain([vi, vr])
    key = Secret(mikey_prf.initiator_data_auth_key(mpk_r.reveal(), prf_func, fam.auth_len), "auth_key")
    try:
        vr.mac = protect.mac(protect.MessageKeys(key, key, key, fam), blank[: -fam.mac_len])
    finally:
        key.zeroize()
    return mikey.encode_chain([vi, vr])


def decode_transfer_init(raw: bytes) -> tuple[mikey.Message, mikey.Ticket]:
    """Decode a TRANSFER_INIT of any kind (a call's, a message's, a focus's) with the checks
    RFC 6043 4.2.2.2 asks before any KMS request: the data type, a ticket type we accept
    (TS 33.328 seam) and algorithm families we know."""
    msg = mikey.Message.decode(raw)
    if msg.header.data_type != mikey.DT_TRANSFER_INIT:
        raise MikeyError("mikey.malformed", f"expected TRANSFER_INIT, got {msg.name}")
    ticket = msg.one(mikey.Ticket)
    if ticket.ticket_type not in ts33328.ACCEPTED_TICKET_TYPES:
        raise MikeyError("mikey.unsupported", "ticket type", ticket_type=ticket.ticket_type)
    protect.family(msg.header.prf_func)
    protect.family(ticket.prf_func)
    return msg, ticket


def transfer_init_of(
    raw: bytes, msg: mikey.Message, ticket: mikey.Ticket, plan: list[streams.StreamCs]
) -> TransferInit:
    """The :class:`TransferInit` of a decoded message (identities canonical, RANDRi)."""
    i = msg.first(mikey.IdRole, mikey.ROLE_I)
    r = msg.first(mikey.IdRole, mikey.ROLE_R)
    return TransferInit(
        raw,
        msg,
        ticket,
        ids.canonical(i.text) if i else None,
        ids.canonical(r.text) if r else None,
        plan,
        msg.one(mikey.RandRole, mikey.RAND_ROLE_I).rand,
    )


def inspect_transfer_init(raw: bytes) -> TransferInit:
    """Parse a TRANSFER_INIT and apply the early checks of RFC 6043 4.2.2.2 (ticket and security
    policies acceptable) before any KMS request; :func:`accept_transfer_init` verifies it."""
    msg, ticket = decode_transfer_init(raw)
    if ticket.flag(mikey.F_I) and not ticket.initiator_data:
        raise MikeyError("mikey.malformed", "a forking ticket (I flag) without Initiator Data")
    return transfer_init_of(raw, msg, ticket, streams.layout(msg))


def verify_transfer_init(
    ti: TransferInit, resolved: ResolvedTicket, own: str, replay: ReplayCache, now: float
) -> None:
    """The responder's checks of a TRANSFER_INIT once its ticket is resolved (4.2.3.6): the
    ticket not expired, T fresh and not replayed (12.4), V under MPKi's message keys (5.5), the
    initiator the ticket's, and with forking Vi in the Initiator Data equal to V."""
    if now >= resolved.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired")
    protect.check_fresh(ti.message, now, replay.window)
    replay.check(ti, now)
    verify_initiator(ti, resolved, own)
    if not resolved.group:
        vi = [p for p in ti.ticket.initiator_payloads() if isinstance(p, mikey.Verification)]
        v = ti.message.payloads[-1]
        assert isinstance(v, mikey.Verification)
        if not vi or not hmac.compare_digest(vi[0].mac, v.mac):
            raise MikeyError("mikey.bad_mac", "Vi in the Initiator Data is not the TRANSFER_INIT's MAC")


def verify_initiator(ti: TransferInit, resolved: ResolvedTicket, own: str) -> None:
    """V of a TRANSFER_INIT under MPKi's message keys (5.1.2, 5.5) and its IDRi the ticket's
    initiator: the initiator, or another holder of MPKi, wrote it."""
    h = ti.message.header
    keys = protect.MessageKeys.derive(
        resolved.mpk_i, h.csb_id, mikey_prf.DIR_INITIAL, ti.rand_i, None, h.prf_func
    )
    try:
        follow = protect.identity(ti.message, mikey.ROLE_I, resolved.initiator.encode()) + protect.identity(
            ti.message, mikey.ROLE_R, ids.canonical(own).encode()
        )
        protect.verify(ti.raw, ti.message, keys, follow)
    finally:
        keys.zeroize()
    if ti.initiator is not None and not hmac.compare_digest(
        ti.initiator.encode(), resolved.initiator.encode()
    ):
        raise KmsError("kms.ticket_rejected", "TRANSFER_INIT initiator is not the ticket's initiator")


def accept_transfer_init(
    ti: TransferInit,
    resolved: ResolvedTicket,
    own: str,
    replay: ReplayCache,
    now: float | None = None,
    own_streams: list[streams.SrtpStream | None] | None = None,
    extra: Sequence[mikey.Payload] = (),
) -> tuple[bytes | None, list[streams.StreamKeyPair]]:
    """Verify a TRANSFER_INIT with the resolved ticket (4.2.3.6); answer TRANSFER_RESP (4.2.2.3;
    None when the F flag is clear) and give this side's keys per stream."""
    now = time.time() if now is None else now
    verify_transfer_init(ti, resolved, own, replay, now)
    h = ti.message.header
    own_c = ids.canonical(own)
    fam = protect.family(h.prf_func)
    cs_map, filled, plan, added_sps = streams.respond_map(
        ti.message, resolved.tgk_spi, own_streams, fam.key_len
    )
    flags = resolved.flags
    rand_r = os.urandom(RAND_LEN) if flags & mikey.F_G else None
    resp_hdr = mikey.Header(mikey.DT_TRANSFER_RESP, h.csb_id, h.prf_func, False, mikey.MAP_GENERIC_ID, cs_map)
    payloads: list[mikey.Payload] = [protect.timestamp(now)]
    if rand_r is not None:
        payloads.append(mikey.RandRole(mikey.RAND_ROLE_R, rand_r))
    payloads.append(mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, resolved.id_r or own_c.encode()))
    if resolved.rand_kms is not None:
        payloads.append(mikey.RandRole(mikey.RAND_ROLE_KMS, resolved.rand_kms))
    payloads += added_sps  # a policy for each crypto session offered with #P = 0 (6.1.1)
    payloads += extra  # General Extensions (a diversion indication: kms/divert.py)
    mpk = resolved.mpk_r if resolved.mpk_r is not None else resolved.mpk_i
    raw: bytes | None = None
    if flags & mikey.F_F:  # 6.10 F flag: TRANSFER_RESP SHALL (1) / SHALL NOT (0) be sent
        rkeys = protect.MessageKeys.derive(
            mpk, h.csb_id, mikey_prf.DIR_RESPONSE, ti.rand_i, rand_r, h.prf_func
        )
        try:
            raw = protect.sign(mikey.Message(resp_hdr, payloads), rkeys, ti.raw)  # 5.5: || TRANSFER_INIT
        finally:
            rkeys.zeroize()
    sessions = _sessions({cs.cs_id: cs for cs in cs_map if isinstance(cs, mikey.GenericCs)})
    d = _derivation(resolved.tgk, flags, ti.rand_i, rand_r, h.prf_func, h.csb_id)
    out = streams.keys_for(plan, sessions, d, initiator=False)
    replay.remember(ti, now)
    return raw, out


def complete(
    pending: PendingOffer, raw: bytes, now: float | None = None
) -> tuple[str, list[streams.StreamKeyPair]]:
    """Verify a TRANSFER_RESP at the initiator (4.2.2.4); (responder identity, keys). Callable
    once per forked answer: each responder's modifier gives its own MPKr' and TGK' (5.1.1)."""
    now = time.time() if now is None else now
    msg = mikey.Message.decode(raw)
    h, offer = msg.header, pending.message.header
    if h.data_type == mikey.DT_ERROR and h.csb_id == offer.csb_id:
        errs = [e.error_no for e in msg.all(mikey.Error)]
        raise MikeyError(
            "mikey.peer_error", "the peer refused the TRANSFER_INIT (Error message)", error_no=errs
        )
    if h.data_type != mikey.DT_TRANSFER_RESP:
        raise MikeyError("mikey.malformed", f"expected TRANSFER_RESP, got {msg.name}")
    if (h.csb_id, h.prf_func, h.version) != (offer.csb_id, offer.prf_func, offer.version):
        raise MikeyError("mikey.malformed", "TRANSFER_RESP does not answer this TRANSFER_INIT")
    protect.check_fresh(msg, now, 300.0)
    issued = pending.issued
    flags = issued.flags
    idr = msg.first(mikey.IdRole, mikey.ROLE_R)
    rr = msg.first(mikey.RandRole, mikey.RAND_ROLE_R)
    rk = msg.first(mikey.RandRole, mikey.RAND_ROLE_KMS)
    if bool(flags & mikey.F_G) != (rr is not None):
        raise MikeyError("mikey.malformed", "RANDRr present although the G flag is clear, or missing")
    rand_r = rr.rand if rr else None
    forked = bool(flags & mikey.F_I)
    tgk = issued.tgk
    mpk = issued.mpk_i
    own_keys: list[Secret] = []
    if forked:
        if idr is None or rk is None or issued.mpk_r is None:
            raise MikeyError("mikey.malformed", "a forked TRANSFER_RESP needs IDRr and RANDRkms")
        mpk, tgk = _fork_pair(issued.mpk_r, issued.tgk, idr.data, rk.rand, offer.prf_func)
        own_keys = [mpk, tgk]
    try:
        keys = protect.MessageKeys.derive(
            mpk, h.csb_id, mikey_prf.DIR_RESPONSE, pending.rand_i, rand_r, h.prf_func
        )
        try:
            protect.verify(raw, msg, keys, pending.transfer_init)
        finally:
            keys.zeroize()
        got = streams.check_response_map(pending.message, msg)
        d = _derivation(tgk, flags, pending.rand_i, rand_r, h.prf_func, h.csb_id)
        out = streams.keys_for(pending.plan, _sessions(got), d, initiator=True)
    finally:
        for k in own_keys:
            k.zeroize()
    responder = ids.canonical(idr.text) if idr is not None else pending.peer
    return responder, out


# ---------------------------------------------------------------------------- Error messages (5.4)

#: a responder's refusal -> the Error no it reports to the initiator (None: discard silently,
#: as for a failure to authenticate the peer, RFC 6043 5.4 / RFC 3830 5.1.2)
_REFUSAL_ERR = {
    "mikey.replay": mikey.ERR_INVALID_TS,
    "mikey.malformed": mikey.ERR_UNSPECIFIED,
    "kms.ticket_rejected": mikey.ERR_INVALID_TICKET,
    "kms.ticket_expired": mikey.ERR_TICKET_EXPIRED,
    "kms.not_authorized": mikey.ERR_NOT_AUTHORIZED,
}


def refusal_error_no(code: str, details: dict) -> int | None:
    if code == "mikey.unsupported":
        if "param" in details:
            return mikey.ERR_INVALID_SPPAR
        if "ticket_type" in details:
            return mikey.ERR_INVALID_TICKET
        if "prf_func" in details:
            return mikey.ERR_INVALID_PRF
        return mikey.ERR_INVALID_SP
    return _REFUSAL_ERR.get(code)


def transfer_error(
    transfer_init: bytes, err_no: int, now: float | None = None, policy_no: int | None = None
) -> bytes | None:
    """The Error message answering a TRANSFER_INIT we refuse (RFC 6043 5.4): HDR, T, ERR, {SP} with
    the TRANSFER_INIT's version, PRF func and CSB ID, V = 0 and a fresh T; for a security policy
    we do not support, the SP we do (under the refused ``policy_no``). Sent without V (the MAC is
    optional and the responder may not hold MPKi). None when the header itself does not parse."""
    try:
        h, _ = mikey.Header.decode(mikey._Reader(bytes(transfer_init)))
    except MikeyError:
        return None
    hdr = mikey.Header(mikey.DT_ERROR, h.csb_id, h.prf_func, False, mikey.MAP_EMPTY)
    payloads: list[mikey.Payload] = [protect.timestamp(now), mikey.Error(err_no)]
    if policy_no is not None and err_no in (mikey.ERR_INVALID_SP, mikey.ERR_INVALID_SPPAR):
        # RFC 4563 5: no SP payload with the Empty map, so the Error keeps the TRANSFER_INIT's map
        hdr = mikey.Header(mikey.DT_ERROR, h.csb_id, h.prf_func, False, h.cs_map_type, h.cs_map)
        payloads.append(streams.supported_srtp_policy(policy_no))
    return mikey.Message(hdr, payloads).encode()
