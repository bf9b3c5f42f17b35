"""``session.keys``, ``session.report``, ``session.close``, and :func:`register`, which every
family uses to hand a negotiated session's keys to the key store and the session registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ue_agent.api.protocol import RawJson, encode_value
from ue_agent.media.sessions import Phase
from ue_agent.ops.declare import Reply, SessionId, SrtcpIndex, SrtpIndex, Ssrc, operation, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.media.keys import StreamKeys
    from ue_agent.ops.context import Context


def register(ctx: Context, sid: str, streams: list[StreamKeys], kind: str, peer: Peer, phase: Phase) -> str:
    """Keys negotiated: into the store (which owns them from now on) and the session ``phase``."""
    sid = ctx.store.add(streams, kind=kind, session_id=sid, peer=f"uid:{peer.uid}")
    ctx.sessions.activate(sid, peer.uid, kind, phase)
    return sid


@request
class SessionKeys:
    session: SessionId


@request
class SessionReport:
    session: SessionId
    ssrc: Ssrc
    index: SrtpIndex
    srtcp_index: SrtcpIndex | None = None


@request
class SessionClose:
    session: SessionId


@operation("session.keys", SessionKeys)
def session_keys(ctx: Context, req: SessionKeys, peer: Peer) -> Reply:
    s = ctx.sessions.owned(req.session, peer.uid)
    # the keys' wire form is encoded once per session and zeroized with it (issue 14)
    out = ctx.store.keys_encoded(req.session, encode_value)
    out["streams"] = RawJson(out["streams"])
    if s is not None:
        out["state"] = s.key_state
        ho = s.handover
        if ho is not None:
            out["handover"] = ho.value
    return out


@operation("session.report", SessionReport)
def session_report(ctx: Context, req: SessionReport, peer: Peer) -> Reply:
    ctx.sessions.owned(req.session, peer.uid)
    return {
        "session": req.session,
        **ctx.store.report(req.session, req.ssrc, req.index, srtcp_index=req.srtcp_index),
    }


@operation("session.close", SessionClose)
def session_close(ctx: Context, req: SessionClose, peer: Peer) -> Reply:
    sid = req.session
    s = ctx.sessions.owned(sid, peer.uid)
    if s is not None and s.phase is Phase.OFFERED:
        # an SDES offer holds its keys: zeroized now. A pending MIKEY offer holds no key of
        # its own: the ticket key stays in the KMS client's cache (for the next offer to this
        # peer) until it expires or we stop.
        from ue_agent.media.sdes import LocalOffer

        if isinstance(s.offer, LocalOffer):
            s.offer.zeroize()
        ctx.sessions.drop(sid)
        return {"session": sid, "state": "closed"}
    ctx.store.close(sid)
    ctx.sessions.drop(sid)
    return {"session": sid, "state": "closed"}
