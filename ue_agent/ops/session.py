"""``session.keys``, ``session.report``, ``session.close``, and the session rules every
family uses: ids, ownership, registration with the key store and the handover tracker."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ue_agent.errors import MediaError
from ue_agent.ops.declare import Reply, operation, param, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.media.keys import StreamKeys
    from ue_agent.ops.context import Context

MAX_PENDING_OFFERS = 64
#: session ids the media store accepts (checked here too for offers not yet in the store)
SESSION_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")


def owned(ctx: Context, session: str, peer: Peer) -> str:
    """The session if ``peer`` may use it; a stranger's session looks like no session."""
    owner = ctx.owners.get(session)
    if owner is not None and peer.uid not in (0, owner):
        raise MediaError("media.unknown_session", "no such media session", session=session[:128])
    return session


def new_session_id(ctx: Context, wanted: str | None) -> str:
    taken = (ctx.owners, ctx.pending_offers, ctx.pending_mikey)
    if wanted is not None and any(wanted in t for t in taken):
        raise MediaError("media.session_exists", "a session with this id exists", session=wanted[:128])
    if wanted is None:
        import secrets

        wanted = "s-" + secrets.token_hex(8)
    return wanted


def check_session_id(sid: str) -> None:
    if not SESSION_ID.fullmatch(sid):
        raise MediaError("media.bad_session", "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")


def check_pending_room(ctx: Context, what: str) -> None:
    if len(ctx.pending_offers) + len(ctx.pending_mikey) >= MAX_PENDING_OFFERS:
        raise MediaError("media.too_many_sessions", f"too many {what} wait for an answer")


def register(ctx: Context, sid: str, streams: list[StreamKeys], kind: str, peer: Peer) -> str:
    sid = ctx.store.add(streams, kind=kind, session_id=sid, peer=f"uid:{peer.uid}")
    ctx.owners[sid] = peer.uid
    ctx.handover.add_session(sid)
    return sid


@request
class SessionKeys:
    session: str


@request
class SessionReport:
    session: str
    ssrc: int = param(required=True, minimum=0, maximum=2**32 - 1)
    index: int = param(required=True, minimum=0, maximum=2**48 - 1)
    srtcp_index: int | None = param(minimum=0, maximum=2**31 - 1)


@request
class SessionClose:
    session: str


@operation("session.keys", SessionKeys)
def session_keys(ctx: Context, req: SessionKeys, peer: Peer) -> Reply:
    sid = owned(ctx, req.session, peer)
    out = ctx.store.keys(sid)
    ho = ctx.handover.state_of(sid)
    if ho is not None:
        out["handover"] = ho.value
    return out


@operation("session.report", SessionReport)
def session_report(ctx: Context, req: SessionReport, peer: Peer) -> Reply:
    sid = owned(ctx, req.session, peer)
    return {
        "session": sid,
        **ctx.store.report(sid, req.ssrc, req.index, srtcp_index=req.srtcp_index),
    }


@operation("session.close", SessionClose)
def session_close(ctx: Context, req: SessionClose, peer: Peer) -> Reply:
    sid = owned(ctx, req.session, peer)
    pending = ctx.pending_offers.get(sid)
    if pending is not None and peer.uid in (0, pending[1]):
        ctx.pending_offers.pop(sid)[0].zeroize()
        return {"session": sid, "state": "closed"}
    mk = ctx.pending_mikey.get(sid)
    if mk is not None and peer.uid in (0, mk[2]):
        # a pending MIKEY offer holds no key of its own: the ticket key stays in the
        # KMS client's cache (for the next offer to this peer) until it expires or we stop
        del ctx.pending_mikey[sid]
        return {"session": sid, "state": "closed"}
    ctx.store.close(sid)
    ctx.owners.pop(sid, None)
    ctx.handover.remove_session(sid)
    return {"session": sid, "state": "closed"}
