"""The UE's side of MIKEY-TICKET, sans-IO: build and check every message, derive the media keys.

Initiator: ``build_request_init`` -> (KMS) -> ``read_request_resp`` -> ``build_transfer_init``
-> (peer) -> ``complete``. Responder: ``inspect_transfer_init`` -> ``build_resolve_init`` ->
(KMS) -> ``read_resolve_resp`` -> ``accept_transfer_init``. No sockets here: bytes in, bytes out;
the clock is a parameter.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, streams, tickets
from ue_agent.kms.service import EXT_DIVERT, EXT_GROUP, encode_policy
from ue_agent.media.keys import MediaKeys
from ue_agent.secret import Secret

RAND_LEN = 16

_ERR_CODES = {
    mikey.ERR_TICKET_EXPIRED: ("kms.ticket_expired", "the KMS says the ticket has expired"),
    mikey.ERR_NOT_AUTHORIZED: (
        "kms.not_authorized",
        "the KMS refused: identity outside the ticket's recipients",
    ),
    mikey.ERR_INVALID_ID: ("kms.not_authorized", "the KMS refused the identity"),
    mikey.ERR_TICKET_INVALID: ("kms.ticket_rejected", "the KMS rejected the ticket"),
    mikey.ERR_AUTH_FAILURE: ("kms.ticket_rejected", "the KMS could not authenticate the request"),
    mikey.ERR_INVALID_TS: ("kms.ticket_rejected", "the KMS refused the request's timestamp"),
}


# ---------------------------------------------------------------------------- state objects


@dataclass(repr=False)
class IssuedTicket:
    """A ticket the initiator holds, with its ticket key (reused for the same peer until expiry)."""

    ticket: mikey.Ticket
    key: Secret  # K_t
    expiry: float
    prf_func: int
    group: bool

    def __repr__(self) -> str:
        return f"<IssuedTicket expiry={self.expiry:.0f} group={self.group}>"


@dataclass(repr=False)
class ResolvedTicket:
    """What the KMS gave a responder for one ticket (kept for reuse until expiry)."""

    k_r: Secret
    mpk_i: Secret
    initiator: str
    expiry: float
    prf_func: int
    group: bool

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
    streams: list[streams.Stream]

    def __repr__(self) -> str:
        return f"<PendingOffer {self.own} -> {self.peer} csb_id={self.message.header.csb_id:#010x}>"


@dataclass
class TransferInit:
    """A received TRANSFER_INIT, parsed but not yet verified."""

    raw: bytes
    message: mikey.Message
    ticket: mikey.Ticket
    initiator: str
    responder: str | None
    streams: list[streams.Stream]
    rand_i: bytes

    @property
    def ticket_ref(self) -> bytes:
        return self.ticket.data


@dataclass
class ReplayCache:
    """TRANSFER_INITs already accepted (by CSB ID and RANDRi) within the freshness window."""

    window: float = 300.0
    _seen: dict[tuple[int, bytes], float] = field(default_factory=dict)

    def check(self, ti: TransferInit, now: float) -> None:
        for k in [k for k, exp in self._seen.items() if exp <= now]:
            del self._seen[k]
        if (ti.message.header.csb_id, ti.rand_i) in self._seen:
            raise MikeyError("mikey.replay", "TRANSFER_INIT already seen (replay)")

    def remember(self, ti: TransferInit, now: float) -> None:
        self._seen[(ti.message.header.csb_id, ti.rand_i)] = now + 2 * self.window


# ---------------------------------------------------------------------------- UE <-> KMS


def _csb_id() -> int:
    return int.from_bytes(os.urandom(4), "big") or 1


def _idr(role: int, text: str, id_type: int = mikey.ID_URI) -> mikey.IdRole:
    return mikey.IdRole(role, id_type, text.encode("utf-8"))


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
    prf_func: int = 1,
) -> tuple[bytes, mikey.Message]:
    """REQUEST_INIT_PSK: HDR, T, RAND, IDRi, IDRr..., IDRkms, IDRpsk, TP, V (under Ks_NAF)."""
    if not recipients:
        raise KmsError("kms.bad_request", "a ticket needs at least one recipient")
    hdr = mikey.Header(mikey.DT_REQUEST_INIT_PSK, _csb_id(), prf_func, v=True)
    rand = os.urandom(RAND_LEN)
    msg = mikey.Message(
        hdr,
        [
            protect.timestamp(now),
            mikey.Rand(rand),
            _idr(mikey.ROLE_I, ids.canonical(own)),
            *(_idr(mikey.ROLE_R, ids.pattern(r)) for r in recipients),
            _idr(mikey.ROLE_KMS, kms_id, mikey.ID_NAI),
            _idr(mikey.ROLE_PSK, btid, mikey.ID_NAI),
            mikey.TicketPolicy(tickets.TICKET_TYPE_LAB, encode_policy(validity, group)),
        ],
    )
    keys = protect.TransportKeys(psk, hdr.csb_id, rand, prf_func)
    return protect.sign(msg, keys.auth), msg


def build_resolve_init(
    own: str,
    ti: TransferInit,
    btid: str,
    psk: Secret,
    kms_id: str,
    *,
    divert_to: str | None = None,
    now: float | None = None,
    prf_func: int = 1,
) -> tuple[bytes, mikey.Message]:
    """RESOLVE_INIT_PSK: HDR, T, RAND, IDRr, IDRi, IDRkms, IDRpsk, TICKET, [divert], V."""
    hdr = mikey.Header(mikey.DT_RESOLVE_INIT_PSK, _csb_id(), prf_func, v=True)
    rand = os.urandom(RAND_LEN)
    payloads: list[mikey.Payload] = [
        protect.timestamp(now),
        mikey.Rand(rand),
        _idr(mikey.ROLE_R, ids.canonical(own)),
        _idr(mikey.ROLE_I, ti.initiator),
        _idr(mikey.ROLE_KMS, kms_id, mikey.ID_NAI),
        _idr(mikey.ROLE_PSK, btid, mikey.ID_NAI),
        ti.ticket,
    ]
    if divert_to is not None:
        payloads.append(mikey.GeneralExt(EXT_DIVERT, ids.canonical(divert_to).encode()))
    msg = mikey.Message(hdr, payloads)
    keys = protect.TransportKeys(psk, hdr.csb_id, rand, prf_func)
    return protect.sign(msg, keys.auth), msg


def read_kms_reply(
    status: int, raw: bytes, request: mikey.Message, psk: Secret, expect: int, kms_id: str
) -> tuple[mikey.Message, protect.TransportKeys]:
    """Decode and verify a KMS reply; an ERR message becomes the matching ``kms.*`` error."""
    try:
        msg = mikey.Message.decode(raw)
    except MikeyError as e:
        raise KmsError(
            "kms.bad_response", f"KMS answered HTTP {status} with no valid MIKEY message", reason=e.code
        ) from None
    rand = request.one(mikey.Rand).rand
    keys = protect.TransportKeys(psk, request.header.csb_id, rand, request.header.prf_func)
    if msg.header.data_type == mikey.DT_ERROR:
        err = msg.first(mikey.Error)
        if err is None:
            raise KmsError("kms.bad_response", "KMS error message without an ERR payload", status=status)
        if msg.first(mikey.Verification) is not None:
            try:
                protect.verify(raw, msg, keys.auth, protect.bind_to(request))
            except MikeyError:
                raise KmsError("kms.bad_response", "KMS error message failed verification") from None
        code, text = _ERR_CODES.get(err.error_no, ("kms.ticket_rejected", "the KMS refused the request"))
        raise KmsError(code, text, kms_error=err.error_no, status=status)
    if status != 200:
        raise KmsError("kms.bad_response", f"KMS answered HTTP {status}", status=status)
    if msg.header.data_type != expect or msg.header.csb_id != request.header.csb_id:
        raise KmsError("kms.bad_response", f"KMS answered with {msg.name} for another exchange")
    try:
        protect.verify(raw, msg, keys.auth, protect.bind_to(request))
    except MikeyError as e:
        raise KmsError("kms.bad_response", "KMS reply failed verification", reason=e.code) from None
    kms = msg.first(mikey.IdRole, mikey.ROLE_KMS)
    if kms is not None and kms.text != kms_id:
        raise KmsError("kms.bad_response", "reply from another KMS identity")
    return msg, keys


def _expiry(msg: mikey.Message) -> float:
    tr = msg.one(mikey.TimestampRole, mikey.TS_ROLE_EXPIRY)
    if tr.ts_type != mikey.TS_NTP_UTC:
        raise KmsError("kms.bad_response", "ticket expiry must be NTP-UTC")
    return protect.unix_from_ntp(tr.value)


def read_request_resp(
    status: int, raw: bytes, request: mikey.Message, psk: Secret, kms_id: str, group: bool = False
) -> IssuedTicket:
    msg, keys = read_kms_reply(status, raw, request, psk, mikey.DT_REQUEST_RESP, kms_id)
    try:
        kd = protect.open_kemac(keys, msg)
        if len(kd) != 1 or kd[0].key_type != mikey.KEY_TGK or len(kd[0].key) != tickets.KEY_LEN:
            raise KmsError("kms.bad_response", "REQUEST_RESP must carry exactly one 256-bit ticket key")
        return IssuedTicket(msg.one(mikey.Ticket), kd[0].key, _expiry(msg), request.header.prf_func, group)
    except MikeyError as e:
        raise KmsError("kms.bad_response", "malformed REQUEST_RESP", reason=e.code) from None


def read_resolve_resp(
    status: int, raw: bytes, request: mikey.Message, psk: Secret, kms_id: str
) -> ResolvedTicket | None:
    """The resolved ticket keys (None for the acknowledgement of a divert authorization)."""
    msg, keys = read_kms_reply(status, raw, request, psk, mikey.DT_RESOLVE_RESP, kms_id)
    try:
        if any(x.ext_type == EXT_DIVERT for x in msg.all(mikey.GeneralExt)):
            return None
        kd = protect.open_kemac(keys, msg)
        if len(kd) != 2 or any(k.key_type != mikey.KEY_TGK or len(k.key) != tickets.KEY_LEN for k in kd):
            raise KmsError("kms.bad_response", "RESOLVE_RESP must carry K_r and MPKi")
        initiator = ids.canonical(msg.one(mikey.IdRole, mikey.ROLE_I).text)
        group = any(x.ext_type == EXT_GROUP for x in msg.all(mikey.GeneralExt))
        return ResolvedTicket(kd[0].key, kd[1].key, initiator, _expiry(msg), request.header.prf_func, group)
    except MikeyError as e:
        raise KmsError("kms.bad_response", "malformed RESOLVE_RESP", reason=e.code) from None


# ---------------------------------------------------------------------------- UE <-> UE


def build_transfer_init(
    issued: IssuedTicket,
    own: str,
    peer: str,
    media: list[streams.Stream],
    kms_id: str,
    now: float | None = None,
) -> PendingOffer:
    """TRANSFER_INIT: HDR(CS map), T, RANDRi, IDRi, IDRr, IDRkms, SP..., TICKET, V (under MPKi).

    A fresh CSB ID and RANDRi per session are the per-session modifier that lets one ticket
    key several sessions with the same peer (TR 33.828 7.1.4.4.2)."""
    now = time.time() if now is None else now
    if now >= issued.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired; request a new one")
    map_type, cs_map, sps = streams.describe(media)
    hdr = mikey.Header(mikey.DT_TRANSFER_INIT, _csb_id(), issued.prf_func, True, map_type, cs_map)
    rand_i = os.urandom(RAND_LEN)
    own_c, peer_c = ids.canonical(own), ids.canonical(peer)
    msg = mikey.Message(
        hdr,
        [
            protect.timestamp(now),
            mikey.RandRole(mikey.RAND_ROLE_I, rand_i),
            _idr(mikey.ROLE_I, own_c),
            _idr(mikey.ROLE_R, peer_c),
            _idr(mikey.ROLE_KMS, kms_id, mikey.ID_NAI),
            *sps,
            issued.ticket,
        ],
    )
    mpk = tickets.mpk_i(issued.key, issued.prf_func)
    raw = protect.sign(msg, protect.TransportKeys(mpk, hdr.csb_id, rand_i, issued.prf_func).auth)
    return PendingOffer(own_c, peer_c, issued, raw, msg, list(media))


def inspect_transfer_init(raw: bytes) -> TransferInit:
    """Parse a TRANSFER_INIT (structure only; :func:`accept_transfer_init` verifies it)."""
    msg = mikey.Message.decode(raw)
    if msg.header.data_type != mikey.DT_TRANSFER_INIT:
        raise MikeyError("mikey.malformed", f"expected TRANSFER_INIT, got {msg.name}")
    r = msg.first(mikey.IdRole, mikey.ROLE_R)
    return TransferInit(
        raw,
        msg,
        msg.one(mikey.Ticket),
        ids.canonical(msg.one(mikey.IdRole, mikey.ROLE_I).text),
        ids.canonical(r.text) if r else None,
        streams.parse(msg),
        msg.one(mikey.RandRole, mikey.RAND_ROLE_I).rand,
    )


def _session_keys(
    k_r: Secret,
    prf_func: int,
    msg: mikey.Message,
    media: list[streams.Stream],
    rand_i: bytes,
    rand_r: bytes | None,
) -> list[MediaKeys]:
    tgk = tickets.tgk(k_r, prf_func)
    try:
        return streams.keys_for(media, tgk, msg.header.csb_id, rand_i, rand_r, prf_func)
    finally:
        tgk.zeroize()


def accept_transfer_init(
    ti: TransferInit,
    resolved: ResolvedTicket,
    own: str,
    replay: ReplayCache,
    now: float | None = None,
) -> tuple[bytes, list[MediaKeys]]:
    """Verify a TRANSFER_INIT with the resolved ticket; answer TRANSFER_RESP and give the keys."""
    now = time.time() if now is None else now
    if now >= resolved.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired")
    protect.check_fresh(ti.message, now, replay.window)
    replay.check(ti, now)
    h = ti.message.header
    mpk = resolved.mpk_i
    protect.verify(ti.raw, ti.message, protect.TransportKeys(mpk, h.csb_id, ti.rand_i, h.prf_func).auth)
    if h.prf_func != resolved.prf_func:
        raise MikeyError("mikey.bad_mac", "TRANSFER_INIT PRF differs from the ticket's")
    if ti.initiator != resolved.initiator:
        raise KmsError("kms.ticket_rejected", "TRANSFER_INIT initiator is not the ticket's initiator")
    own_c = ids.canonical(own)
    rand_r = None if resolved.group else os.urandom(RAND_LEN)
    resp_hdr = mikey.Header(mikey.DT_TRANSFER_RESP, h.csb_id, h.prf_func, False, h.cs_map_type, h.cs_map)
    payloads: list[mikey.Payload] = [protect.timestamp(now)]
    if rand_r is not None:
        payloads.append(mikey.RandRole(mikey.RAND_ROLE_R, rand_r))
    payloads.append(_idr(mikey.ROLE_R, own_c))
    mpk_r = tickets.mpk_r(resolved.k_r, h.prf_func)
    auth = protect.TransportKeys(mpk_r, h.csb_id, ti.rand_i + (rand_r or b""), h.prf_func).auth
    raw = protect.sign(mikey.Message(resp_hdr, payloads), auth, protect.bind_to(ti.message))
    keys = _session_keys(resolved.k_r, h.prf_func, ti.message, ti.streams, ti.rand_i, rand_r)
    replay.remember(ti, now)
    return raw, keys


def complete(pending: PendingOffer, raw: bytes, now: float | None = None) -> tuple[str, list[MediaKeys]]:
    """Verify a TRANSFER_RESP at the initiator; (responder identity, keys). Callable once per fork."""
    now = time.time() if now is None else now
    msg = mikey.Message.decode(raw)
    h, offer = msg.header, pending.message.header
    if h.data_type != mikey.DT_TRANSFER_RESP:
        raise MikeyError("mikey.malformed", f"expected TRANSFER_RESP, got {msg.name}")
    if h.csb_id != offer.csb_id or h.cs_map != offer.cs_map or h.prf_func != offer.prf_func:
        raise MikeyError("mikey.malformed", "TRANSFER_RESP does not answer this TRANSFER_INIT")
    protect.check_fresh(msg, now, 300.0)
    responder = ids.canonical(msg.one(mikey.IdRole, mikey.ROLE_R).text)
    rr = msg.first(mikey.RandRole, mikey.RAND_ROLE_R)
    issued = pending.issued
    if issued.group == (rr is not None):
        raise MikeyError("mikey.malformed", "RANDRr present for a group ticket or missing otherwise")
    rand_r = rr.rand if rr else None
    rand_i = pending.message.one(mikey.RandRole, mikey.RAND_ROLE_I).rand
    k_r = tickets.responder_key(issued.key, None if issued.group else responder, issued.prf_func)
    try:
        mpk_r = tickets.mpk_r(k_r, h.prf_func)
        auth = protect.TransportKeys(mpk_r, h.csb_id, rand_i + (rand_r or b""), h.prf_func).auth
        protect.verify(raw, msg, auth, protect.bind_to(pending.message))
        return responder, _session_keys(k_r, h.prf_func, pending.message, pending.streams, rand_i, rand_r)
    finally:
        k_r.zeroize()
