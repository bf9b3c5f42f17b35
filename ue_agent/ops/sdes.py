"""``sdes.offer`` and ``sdes.answer``: SDES key exchange in SDP (RFC 4568; TS 33.328 e2ae)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.convert import Range
from ue_agent.media.sessions import Phase
from ue_agent.ops import early
from ue_agent.ops.declare import Reply, SessionId, StreamLines, TextList, listed, operation, request
from ue_agent.ops.session import register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.media.keys import SrtpKeys
    from ue_agent.media.protection import Protection
    from ue_agent.media.sdes import LocalOffer
    from ue_agent.media.sessions import MediaSession
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
    #: a provisional answer (183) of the early dialog ``dialog`` (ue_agent.ops.early)
    early: bool = False
    dialog: SessionId | None = None


@operation("sdes.offer", SdesOffer)
def sdes_offer(ctx: Context, req: SdesOffer, peer: Peer) -> Reply:
    from ue_agent.media.sdes import make_offer

    ctx.sessions.check_room("SDES offers")
    sid = ctx.sessions.new_id(req.session, peer.uid)
    lines, local = make_offer(req.media, req.suites, lifetime=req.lifetime, e2ae=req.e2ae, reply=True)
    ctx.sessions.offer(sid, peer.uid, "sdes", local, req.media, conn=peer.conn)
    return {"session": sid, "streams": streams_out(req.media, lines)}


@operation("sdes.answer", SdesAnswer)
def sdes_answer(ctx: Context, req: SdesAnswer, peer: Peer) -> Reply:
    from ue_agent.media.e2ae import APPLIED, parse_e2ae
    from ue_agent.media.protection import sdes
    from ue_agent.media.sdes import LocalOffer, accept_answer, crypto_lines, make_answer

    if (req.offer is None) == (req.answer is None):
        raise api_error(BAD_REQUEST, "give 'offer' (to answer it) or 'answer' (to our offer)", param="offer")
    if req.answer is not None:  # we offered: the peer's answer completes the session
        sid = req.session
        if sid is None:
            raise api_error(BAD_REQUEST, "'session' (from sdes.offer) is required", param="session")
        s = ctx.sessions.take_offer(sid, peer.uid, "sdes")
        local = s.offer
        assert isinstance(local, LocalOffer)
        tag = early.digest([crypto_lines(ls) for ls in req.answer])
        if req.early:
            return sdes_early(ctx, s, local, req.answer, early.dialog_id(req.dialog), tag, peer)
        confirmed = early.finish(ctx, s, req.dialog, tag, peer, Phase.ACTIVE)
        if confirmed is not None:  # the final answer repeats the winning early dialog's
            local.zeroize()
            assert s.protection is not None
            return {"session": sid, "state": "active", "streams": list(s.media),
                    "protection": s.protection.to_wire(), **confirmed}  # fmt: skip
        dialogs = s.early
        ctx.sessions.drop(sid, peer.uid)  # one answer per offer, accepted or not
        answer, unkeyed, offered = req.answer, [], local
        try:
            if len(answer) == len(local.streams):  # a stream answered without a=crypto: plain RTP
                plain = [i for i, ls in enumerate(answer) if not crypto_lines(ls)]
                unkeyed = [local.streams[i].media for i in plain]
                answer = [ls for i, ls in enumerate(answer) if i not in plain]
                local = LocalOffer([st for i, st in enumerate(local.streams) if i not in plain])
            streams = accept_answer(local, answer) if answer else []
        finally:
            offered.zeroize()  # the keys not taken (accepted ones left the offer)
        applied = [parse_e2ae(ls) == APPLIED for ls in answer]
        protection = sdes([st.media for st in streams], applied, unkeyed)
        if not streams:  # nothing keyed: the call runs unprotected
            early.settle(ctx, dialogs, req.dialog, tag)
            return unprotected(ctx, sid, peer, protection)
        try:
            register(ctx, sid, streams, "sdes", peer, Phase.ACTIVE, protection, group=sid)
        finally:
            settled = early.settle(ctx, dialogs, req.dialog, tag)  # the early dialogs' keys go
        return {
            "session": sid,
            "state": "active",
            "streams": [s.media for s in streams],
            "protection": protection.to_wire(),
            **settled,
        }
    assert req.offer is not None
    ctx.sessions.check_room("sessions", offer=False)
    sid = ctx.sessions.new_id(req.session, peer.uid)
    lines, streams = make_answer(req.offer, req.media, req.suites, reply=True)
    # the terminating e2ae case: the network (IMS-AGW) put the offer in, saying so per m-line
    applied = [parse_e2ae(ls) == APPLIED for ls in req.offer]
    protection = sdes([st.media for st in streams], applied[: len(streams)])
    register(ctx, sid, streams, "sdes", peer, Phase.ANSWERED, protection)
    return {
        "session": sid,
        "streams": streams_out([s.media for s in streams], lines),
        "protection": protection.to_wire(),
    }


def sdes_early(
    ctx: Context,
    s: MediaSession,
    local: LocalOffer,
    answer: list[list[str]],
    dialog: str,
    tag: bytes,
    peer: Peer,
) -> Reply:
    """A provisional answer to our offer in early dialog ``dialog``: its keys, our offer kept
    for the other forks and the final answer (our key copied: every fork got the same offer)."""
    from ue_agent.media.e2ae import APPLIED, parse_e2ae
    from ue_agent.media.protection import sdes
    from ue_agent.media.sdes import LocalOffer, OfferedStream, accept_answer, crypto_lines

    if not any(crypto_lines(ls) for ls in answer):  # plain RTP early media
        return early.plain_early(ctx, s, dialog, [st.media for st in local.streams], tag)
    copy = LocalOffer(
        [OfferedStream(st.media, st.lines, {t: copy_keys(k) for t, k in st.keys.items()}, st.lifetime)
         for st in local.streams]
    )  # fmt: skip
    try:
        streams = accept_answer(copy, answer)
    finally:
        copy.zeroize()
    protection = sdes([st.media for st in streams], [parse_e2ae(ls) == APPLIED for ls in answer])
    return early.add_early(ctx, s, dialog, streams, tag, protection, peer)


def copy_keys(k: SrtpKeys) -> SrtpKeys:
    from ue_agent.media.keys import SrtpKeys

    key = k.master_key.slice(0, len(k.master_key))
    salt = k.master_salt.slice(0, len(k.master_salt))
    return SrtpKeys(k.suite, key, salt, k.ssrc, k.roc, k.mki)


def unprotected(ctx: Context, sid: str, peer: Peer, protection: Protection) -> Reply:
    """The answer keyed none of our streams: the session ends without keys, as the policy says."""
    from ue_agent.media.protection import evaluate
    from ue_agent.ops.session import refuse, session_event, warn

    findings = evaluate(ctx.cfg.policy, protection)
    refused = any(f.refuse for f in findings)
    s = ctx.sessions.end(sid, peer.uid, "sdes", "policy_refused" if refused else "unprotected")
    s.protection = protection
    if refused:
        raise refuse(ctx, s, findings)
    warn(ctx, s.key, findings)
    ctx.emit("session", session_event(s))
    return {"session": sid, "state": "closed", "streams": [], "protection": protection.to_wire()}
