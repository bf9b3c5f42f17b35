"""``mikey.offer``, ``mikey.answer``, ``mikey.complete``: KMS-based keys (TS 33.328, RFC 6043)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.errors import AgentError, MediaError
from ue_agent.media.sessions import Phase
from ue_agent.ops import conference, early
from ue_agent.ops.aka import b64
from ue_agent.ops.declare import Reply, SessionId, Text, TextList, Validity, listed, operation, request
from ue_agent.ops.session import register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.kms.streams import SrtpStream, StreamKeyPair, TlsStream
    from ue_agent.media.keys import StreamKeys
    from ue_agent.ops.context import Context

_TLS_MEDIA = {"message": "TCP/TLS/MSRP", "msrp": "TCP/TLS/MSRP", "bfcp": "TCP/TLS/BFCP"}


def mikey_stream(media: str, suite: str | None) -> SrtpStream | TlsStream:
    """A media name -> the MIKEY crypto session to key: SRTP for RTP media, TLS for MSRP/BFCP."""
    from ue_agent.kms.streams import SrtpStream, TlsStream

    if media in _TLS_MEDIA:
        return TlsStream(_TLS_MEDIA[media])
    return SrtpStream(suite) if suite else SrtpStream()


def mikey_streams(keys: list[StreamKeyPair], media: list[str] | None) -> list[StreamKeys]:
    """MIKEY gives per SRTP stream a crypto session for each direction (RFC 6043 6.1.1,
    docs/kms.md): ``tx`` ours, ``rx`` the peer's; a TLS session has one PSK for both."""
    from ue_agent.media.keys import StreamKeys, TlsPskKeys

    if media is not None and len(media) != len(keys):
        for k in keys:
            k.zeroize()
        raise MediaError("media.bad_session", f"'media' must name {len(keys)} streams", streams=len(keys))
    names = media or ["message" if isinstance(k.tx, TlsPskKeys) else "audio" for k in keys]
    return [StreamKeys(name, tx=k.tx, rx=k.rx) for name, k in zip(names, keys, strict=True)]


def mikey_message(value: str, name: str) -> bytes:
    """A MIKEY message given as base64 or as the SDP line ``a=key-mgmt:mikey <base64>``."""
    from ue_agent.kms.sdp import parse

    if value.startswith(("a=key-mgmt:", "key-mgmt:")):
        return parse(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(BAD_REQUEST, f"'{name}' must be base64 or an a=key-mgmt line", param=name) from None
    if not raw:
        raise api_error(BAD_REQUEST, f"'{name}' is empty", param=name)
    return raw


@request
class MikeyOffer:
    session: SessionId | None = None
    responder: Text
    media: TextList = listed("audio")
    suite: Text | None = None
    recipients: TextList | None = None
    group: bool = False
    #: withhold our identity from the callee (TR 33.828 req. 49, kms/anonymity.py)
    anonymous: bool = False
    #: keys at offer time from a one-way ticket, for a receiver that may be offline (ops/deferred.py)
    deferred: bool = False
    validity: Validity | None = None
    #: the responder is a conference focus: it may choose the keys (M flag, ue_agent/ops/conference.py)
    conference: bool = False


@request
class MikeyAnswer:
    session: SessionId | None = None
    transfer_init: Text
    media: TextList | None = None
    #: a call diverted to us (TR 33.829 9.2, ops/divert.py): the served user and the CDIV AS
    diverted_from: Text | None = None
    cdiv_as: Text | None = None


@request
class MikeyComplete:
    session: SessionId
    transfer_resp: Text
    media: TextList | None = None
    #: a TRANSFER_RESP in a provisional answer (183) of the early dialog ``dialog``
    early: bool = False
    dialog: SessionId | None = None


@operation("mikey.offer", MikeyOffer)
async def mikey_offer(ctx: Context, req: MikeyOffer, peer: Peer) -> Reply:
    from ue_agent.kms.sdp import build

    if req.deferred and req.anonymous:  # a one-way ticket is not issued anonymously (yet): say so
        raise api_error(BAD_REQUEST, "'anonymous' cannot be combined with 'deferred'", param="anonymous")
    if req.deferred:
        from ue_agent.ops.deferred import offer_deferred

        return await offer_deferred(ctx, req, peer)
    if req.validity is not None:
        raise api_error(BAD_REQUEST, "'validity' goes with 'deferred'", param="validity")
    ctx.sessions.check_room("offers")
    sid = ctx.sessions.new_id(req.session)
    streams = [mikey_stream(m, req.suite) for m in req.media]
    kms = await ctx.network.kms()
    res = await kms.offer(
        req.responder,
        streams,
        recipients=req.recipients,
        group=req.group,
        focus=req.conference,
        anonymous=req.anonymous,
    )
    ctx.sessions.check_room("offers")  # again: other offers may have taken the room meanwhile
    s = ctx.sessions.offer(sid, peer.uid, "mikey", res.pending, req.media)
    s.requested, s.recipients = req.responder, list(req.recipients or [req.responder])
    return {
        "session": sid,
        "transfer_init": b64(res.transfer_init),
        "key_mgmt": build(res.transfer_init),
        "reused_ticket": res.reused_ticket,
    }


@operation("mikey.answer", MikeyAnswer)
async def mikey_answer(ctx: Context, req: MikeyAnswer, peer: Peer) -> Reply:
    from ue_agent.kms.sdp import build

    ctx.sessions.check_room("sessions", offer=False)
    sid = ctx.sessions.new_id(req.session)
    from ue_agent.ops import divert

    message = mikey_message(req.transfer_init, "transfer_init")
    diversion = divert.diversion_of(req.diverted_from, req.cdiv_as, message)
    kms = await ctx.network.kms()
    try:
        res = await kms.answer(message, diversion=diversion)
    except AgentError as exc:  # RFC 6043 5.4: an Error message for the initiator, when one is due
        from ue_agent.kms import session

        err_no = session.refusal_error_no(exc.code or "", exc.details)
        policy_no = exc.details.get("policy_no")
        err = divert.refusal_message(exc, message, kms.client.own)  # a diverted call: solution #2
        if err is None and err_no is not None:
            err = session.transfer_error(message, err_no, policy_no=policy_no)
        if err is not None:
            exc.details["key_mgmt"] = build(err)
        raise
    from ue_agent.media.protection import mikey_callee

    streams = mikey_streams(res.keys, req.media)
    protection = mikey_callee([s.media for s in streams], res.peer_uri, res.anonymous, res.vouched)
    try:
        register(ctx, sid, streams, "mikey", peer, Phase.ANSWERED, protection)
    except AgentError:
        if res.group is not None:
            res.group.zeroize()
        raise
    return {
        **conference.keep(ctx, sid, res.group),  # group keys of a focus (dial-out)
        "session": sid,
        "peer": protection.peer,
        "protection": protection.to_wire(),
        **({"anonymous": True, "kms_vouched": res.vouched} if res.anonymous else {}),
        **({"diverted_from": res.diverted_from} if res.diverted_from else {}),
        # no TRANSFER_RESP when the ticket's F flag is clear (RFC 6043 6.10)
        **(
            {"transfer_resp": b64(res.transfer_resp), "key_mgmt": build(res.transfer_resp)}
            if res.transfer_resp
            else {}
        ),
        "streams": [s.media for s in streams],
    }


@operation("mikey.complete", MikeyComplete)
async def mikey_complete(ctx: Context, req: MikeyComplete, peer: Peer) -> Reply:
    from ue_agent.kms.session import PendingOffer

    sid = req.session
    offer = ctx.sessions.take_offer(sid, peer.uid, "mikey")
    pending, media = offer.offer, offer.media
    assert isinstance(pending, PendingOffer)
    from ue_agent.ops import divert

    message = mikey_message(req.transfer_resp, "transfer_resp")
    tag = early.digest(message)
    if not req.early and (diverted := divert.diverted_result(ctx, offer, message, peer)) is not None:
        return diverted  # solution #2 (TR 33.829 9.3): offer to the named user instead
    if not req.early:
        confirmed = early.finish(ctx, offer, req.dialog, tag, peer, Phase.ACTIVE)
        if confirmed is not None:  # the 200 OK repeats the winning early dialog's TRANSFER_RESP
            assert offer.protection is not None
            return {
                "session": sid,
                "state": "active",
                "streams": list(offer.media),
                "peer": offer.protection.peer,
                "protection": offer.protection.to_wire(),
                **confirmed,
            }
    kms = await ctx.network.kms()
    from ue_agent.media.protection import mikey_caller

    # raises on a bad answer; the offer stays for a retry. Once per fork (RFC 6043 5.1.1).
    keys, responder, vouched = kms.complete_with_peer(pending, message)
    keys, group = conference.after_complete(pending, message, keys)  # a focus's keys (dial-in)
    if group is not None and req.early:
        group.zeroize()  # no conference updates for an early dialog
        group = None
    requested, recipients = offer.requested or pending.peer, offer.recipients or [pending.peer]
    streams = mikey_streams(keys, req.media or media)
    protection = mikey_caller([s.media for s in streams], responder, vouched, requested, recipients)
    if vouched and responder != protection.requested:  # a diverted call (TR 33.829 9.2)
        from ue_agent.kms.divert import announced

        protection.diverted_from = announced(message)
    if req.early:
        out = early.add_early(ctx, offer, early.dialog_id(req.dialog), streams, tag, protection, peer)
        return {**out, "peer": responder}
    dialogs = offer.early
    ctx.sessions.drop(sid)
    try:
        register(ctx, sid, streams, "mikey", peer, Phase.ACTIVE, protection, group=sid)
    except AgentError:
        if group is not None:
            group.zeroize()
        raise
    finally:
        settled = early.settle(ctx, dialogs, req.dialog, tag)
    return {
        **conference.keep(ctx, sid, group),
        "session": sid,
        "state": "active",
        "streams": [s.media for s in streams],
        "peer": responder,
        "protection": protection.to_wire(),
        **settled,
    }
