"""``sdes.offer`` and ``sdes.answer``: SDES key exchange in SDP (RFC 4568; TS 33.328 e2ae)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.errors import MediaError
from ue_agent.ops.declare import Reply, operation, param, request
from ue_agent.ops.session import check_pending_room, check_session_id, new_session_id, register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context


def streams_out(media: list[str], lines: list[list[str]]) -> list[dict[str, Any]]:
    return [{"media": m, "lines": ls} for m, ls in zip(media, lines, strict=True)]


@request
class SdesOffer:
    session: str | None = None
    media: list[str] = param(["audio"])
    suites: list[str] | None = None
    e2ae: bool = False
    lifetime: int | None = param(minimum=1, maximum=2**48)


@request
class SdesAnswer:
    session: str | None = None
    offer: list[list[str]] | None = None
    answer: list[list[str]] | None = None
    media: list[str] | None = None
    suites: list[str] | None = None


@operation("sdes.offer", SdesOffer)
def sdes_offer(ctx: Context, req: SdesOffer, peer: Peer) -> Reply:
    from ue_agent.media.sdes import make_offer

    check_pending_room(ctx, "SDES offers")
    sid = new_session_id(ctx, req.session)
    check_session_id(sid)
    lines, local = make_offer(req.media, req.suites, lifetime=req.lifetime, e2ae=req.e2ae)
    ctx.pending_offers[sid] = (local, peer.uid)
    return {"session": sid, "streams": streams_out(req.media, lines)}


@operation("sdes.answer", SdesAnswer)
def sdes_answer(ctx: Context, req: SdesAnswer, peer: Peer) -> Reply:
    from ue_agent.media.sdes import accept_answer, make_answer

    if (req.offer is None) == (req.answer is None):
        raise api_error(BAD_REQUEST, "give 'offer' (to answer it) or 'answer' (to our offer)", param="offer")
    if req.answer is not None:  # we offered: the peer's answer completes the session
        sid = req.session
        if sid is None:
            raise api_error(BAD_REQUEST, "'session' (from sdes.offer) is required", param="session")
        entry = ctx.pending_offers.get(sid)
        if entry is None or peer.uid not in (0, entry[1]):
            raise MediaError("media.unknown_session", "no SDES offer waits under this session", session=sid)
        local = ctx.pending_offers.pop(sid)[0]
        try:
            streams = accept_answer(local, req.answer)
        finally:
            local.zeroize()
        register(ctx, sid, streams, "sdes", peer)
        return {"session": sid, "state": "active", "streams": [s.media for s in streams]}
    assert req.offer is not None
    sid = new_session_id(ctx, req.session)
    lines, streams = make_answer(req.offer, req.media, req.suites)
    register(ctx, sid, streams, "sdes", peer)
    return {"session": sid, "streams": streams_out([s.media for s in streams], lines)}
