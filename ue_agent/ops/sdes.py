"""``sdes.offer`` and ``sdes.answer``: SDES key exchange in SDP (RFC 4568; TS 33.328 e2ae)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.convert import Range
from ue_agent.media.sessions import Phase
from ue_agent.ops.declare import Reply, SessionId, StreamLines, TextList, listed, operation, request
from ue_agent.ops.session import register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context
    from ue_agent.secret import SecretText


def streams_out(media: list[str], lines: list[list[str | SecretText]]) -> list[dict[str, Any]]:
    return [{"media": m, "lines": ls} for m, ls in zip(media, lines, strict=True)]


@request
class SdesOffer:
    session: SessionId | None = None
    media: TextList = listed("audio")
    suites: TextList | None = None
    e2ae: bool = False
    #: packets (RFC 4568 §6.1 lifetime), at most the SRTP limit 2^48
    lifetime: Annotated[int, Range(1, 2**48)] | None = None


@request
class SdesAnswer:
    session: SessionId | None = None
    offer: StreamLines | None = None
    answer: StreamLines | None = None
    media: TextList | None = None
    suites: TextList | None = None


@operation("sdes.offer", SdesOffer)
def sdes_offer(ctx: Context, req: SdesOffer, peer: Peer) -> Reply:
    from ue_agent.media.sdes import make_offer

    ctx.sessions.check_room("SDES offers")
    sid = ctx.sessions.new_id(req.session)
    lines, local = make_offer(req.media, req.suites, lifetime=req.lifetime, e2ae=req.e2ae, reply=True)
    ctx.sessions.offer(sid, peer.uid, "sdes", local, req.media)
    return {"session": sid, "streams": streams_out(req.media, lines)}


@operation("sdes.answer", SdesAnswer)
def sdes_answer(ctx: Context, req: SdesAnswer, peer: Peer) -> Reply:
    from ue_agent.media.sdes import LocalOffer, accept_answer, make_answer

    if (req.offer is None) == (req.answer is None):
        raise api_error(BAD_REQUEST, "give 'offer' (to answer it) or 'answer' (to our offer)", param="offer")
    if req.answer is not None:  # we offered: the peer's answer completes the session
        sid = req.session
        if sid is None:
            raise api_error(BAD_REQUEST, "'session' (from sdes.offer) is required", param="session")
        local = ctx.sessions.take_offer(sid, peer.uid, "sdes").offer
        assert isinstance(local, LocalOffer)
        ctx.sessions.drop(sid)  # one answer per offer, accepted or not
        try:
            streams = accept_answer(local, req.answer)
        finally:
            local.zeroize()
        register(ctx, sid, streams, "sdes", peer, Phase.ACTIVE)
        return {"session": sid, "state": "active", "streams": [s.media for s in streams]}
    assert req.offer is not None
    ctx.sessions.check_room("sessions", offer=False)
    sid = ctx.sessions.new_id(req.session)
    lines, streams = make_answer(req.offer, req.media, req.suites, reply=True)
    register(ctx, sid, streams, "sdes", peer, Phase.ANSWERED)
    return {"session": sid, "streams": streams_out([s.media for s in streams], lines)}
