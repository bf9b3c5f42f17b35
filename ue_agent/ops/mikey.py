"""``mikey.offer``, ``mikey.answer``, ``mikey.complete``: KMS-based keys (TS 33.328, RFC 6043)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.errors import MediaError
from ue_agent.ops.aka import b64
from ue_agent.ops.declare import Reply, operation, param, request
from ue_agent.ops.session import check_pending_room, check_session_id, new_session_id, register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.kms.streams import SrtpStream, TlsStream
    from ue_agent.media.keys import MediaKeys, StreamKeys
    from ue_agent.ops.context import Context

_TLS_MEDIA = {"message": "TCP/TLS/MSRP", "msrp": "TCP/TLS/MSRP", "bfcp": "TCP/TLS/BFCP"}


def mikey_stream(media: str, suite: str | None) -> SrtpStream | TlsStream:
    """A media name -> the MIKEY crypto session to key: SRTP for RTP media, TLS for MSRP/BFCP."""
    from ue_agent.kms.streams import SrtpStream, TlsStream

    if media in _TLS_MEDIA:
        return TlsStream(_TLS_MEDIA[media])
    return SrtpStream(suite) if suite else SrtpStream()


def mikey_streams(keys: list[MediaKeys], media: list[str] | None) -> list[StreamKeys]:
    """MIKEY gives one key per crypto session, for both directions (SSRCs keep them apart)."""
    from ue_agent.media.keys import StreamKeys, TlsPskKeys

    if media is not None and len(media) != len(keys):
        for k in keys:
            k.zeroize()
        raise MediaError("media.bad_session", f"'media' must name {len(keys)} streams", streams=len(keys))
    names = media or ["message" if isinstance(k, TlsPskKeys) else "audio" for k in keys]
    return [StreamKeys(name, tx=k) for name, k in zip(names, keys, strict=True)]


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
    session: str | None = None
    responder: str
    media: list[str] = param(["audio"])
    suite: str | None = None
    recipients: list[str] | None = None
    group: bool = False


@request
class MikeyAnswer:
    session: str | None = None
    transfer_init: str
    media: list[str] | None = None


@request
class MikeyComplete:
    session: str
    transfer_resp: str
    media: list[str] | None = None


@operation("mikey.offer", MikeyOffer)
async def mikey_offer(ctx: Context, req: MikeyOffer, peer: Peer) -> Reply:
    from ue_agent.kms.sdp import build

    check_pending_room(ctx, "offers")
    sid = new_session_id(ctx, req.session)
    check_session_id(sid)
    streams = [mikey_stream(m, req.suite) for m in req.media]
    kms = await ctx.network.kms()
    res = await kms.offer(req.responder, streams, recipients=req.recipients, group=req.group)
    ctx.pending_mikey[sid] = (res.pending, req.media, peer.uid)
    return {
        "session": sid,
        "transfer_init": b64(res.transfer_init),
        "key_mgmt": build(res.transfer_init),
        "reused_ticket": res.reused_ticket,
    }


@operation("mikey.answer", MikeyAnswer)
async def mikey_answer(ctx: Context, req: MikeyAnswer, peer: Peer) -> Reply:
    from ue_agent.kms.sdp import build

    sid = new_session_id(ctx, req.session)
    check_session_id(sid)
    message = mikey_message(req.transfer_init, "transfer_init")
    kms = await ctx.network.kms()
    res = await kms.answer(message)
    streams = mikey_streams(res.keys, req.media)
    register(ctx, sid, streams, "mikey", peer)
    return {
        "session": sid,
        "peer": res.peer_uri,
        "transfer_resp": b64(res.transfer_resp),
        "key_mgmt": build(res.transfer_resp),
        "streams": [s.media for s in streams],
    }


@operation("mikey.complete", MikeyComplete)
async def mikey_complete(ctx: Context, req: MikeyComplete, peer: Peer) -> Reply:
    sid = req.session
    entry = ctx.pending_mikey.get(sid)
    if entry is None or peer.uid not in (0, entry[2]):
        raise MediaError("media.unknown_session", "no MIKEY offer waits under this session", session=sid)
    message = mikey_message(req.transfer_resp, "transfer_resp")
    kms = await ctx.network.kms()
    keys = kms.complete(entry[0], message)  # raises on a bad answer; the offer stays for a retry
    del ctx.pending_mikey[sid]
    streams = mikey_streams(keys, req.media or entry[1])
    register(ctx, sid, streams, "mikey", peer)
    return {"session": sid, "state": "active", "streams": [s.media for s in streams]}
