"""``session.keys``, ``session.report``, ``session.close``, and :func:`register`, which every
family uses to hand a negotiated session's keys to the key store and the session registry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ue_agent.api.protocol import RawJson, encode_value, frozen
from ue_agent.errors import AgentError
from ue_agent.media.sessions import Phase, scoped
from ue_agent.media.store import KeyStore
from ue_agent.ops.declare import Reply, SessionId, SrtcpIndex, SrtpIndex, Ssrc, operation, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.media.keys import StreamKeys
    from ue_agent.media.protection import Finding, Protection
    from ue_agent.media.sessions import Decision, EarlyDialog, MediaSession
    from ue_agent.media.store import Keys
    from ue_agent.ops.context import Context

POLICY_REFUSED = "policy.refused"


def session_event(s: MediaSession) -> dict[str, Any]:
    """The ``session`` event's body: the session's keys' state and its protection. ``session``
    is the session's key (owner/id): the daemon routes the event and shows each uid its id."""
    out: dict[str, Any] = {"session": s.key, "kind": s.kind, "state": s.key_state}
    if s.protection is not None:
        out["protection"] = s.protection.to_wire()
    return out


def warn(ctx: Context, key: str, findings: list[Finding]) -> None:
    """The findings as ``security.warning`` events about the session ``key`` (owner/id)."""
    for f in findings:
        ctx.emit("security.warning", f.event(key))


def refuse(ctx: Context, s: MediaSession, findings: list[Finding]) -> AgentError:
    """The policy refused the session's keys (they are zeroized): warnings, the ``session``
    event, and the error to raise."""
    warn(ctx, s.key, findings)
    ctx.emit("session", session_event(s))
    kinds = [f.kind for f in findings if f.refuse]
    return AgentError(
        POLICY_REFUSED,
        "the [policy] refuses this session's protection: " + ", ".join(kinds),
        session=s.id,
        kinds=kinds,
    )


def register(
    ctx: Context,
    sid: str,
    streams: list[StreamKeys],
    kind: str,
    peer: Peer,
    phase: Phase,
    protection: Protection,
    group: str | None = None,
) -> str:
    """Keys negotiated: checked against the [policy] (docs/policy.md), then into the store
    (which owns them from now on) and the session ``phase``; warnings and the ``session``
    event go out. A refusal zeroizes the keys and raises ``policy.refused``."""
    from ue_agent.media.protection import evaluate

    findings = evaluate(ctx.cfg.policy, protection)
    if any(f.refuse for f in findings):
        for st in streams:
            st.zeroize()
        s = ctx.sessions.end(sid, peer.uid, kind, "policy_refused")
        s.protection = protection
        raise refuse(ctx, s, findings)
    group = scoped(peer.uid, group) if group is not None else None
    ctx.store.add(streams, kind=kind, session_id=scoped(peer.uid, sid), peer=f"uid:{peer.uid}", group=group)
    s = ctx.sessions.activate(sid, peer.uid, kind, phase, [st.media for st in streams])
    s.protection = protection
    warn(ctx, s.key, findings)
    ctx.emit("session", session_event(s))
    return sid


def moved_to_cs(ctx: Context, decisions: list[Decision]) -> None:
    """After SRVCC success: each session whose voice/video moved to CS says so
    (``protection_lost`` naming the media and the new protection, CS radio only; TR 33.829
    clause 6, docs/handover.md) and its ``session`` event shows the new protection."""
    from ue_agent.media.protection import CS_RADIO, PROTECTION_LOST

    for d in decisions:
        s = ctx.sessions.by_key(d.key)
        if s is None or not (d.release_keys or d.release_media):
            continue
        media = list(d.release_media) if d.release_media else []
        before: dict[str, str] = {}
        if s.protection is not None:
            media = media or [m for m in s.protection.media if m != CS_RADIO]
            before = {m: s.protection.media.get(m, "none") for m in media}
            for m in media:
                s.protection.media[m] = CS_RADIO
        what = ", ".join(media) or "the call"
        ctx.emit(
            "security.warning",
            {
                "kind": PROTECTION_LOST,
                "session": s.key,
                "message": f"{what} moved to CS (SRVCC): ciphered on the CS radio link only, "
                "no longer end to end; the keys are released",
                "action": "warned",
                "media": media,
                "before": before,
                "protection": {"scope": "none", "mechanism": CS_RADIO},
            },
        )
        ctx.emit("session", session_event(s))


def early_of(s: MediaSession | None, sid: str, dialog: str) -> tuple[EarlyDialog, str]:
    """The keyed early dialog ``dialog`` of the offer ``sid``, or ``media.unknown_session``."""
    from ue_agent.errors import MediaError

    e = s.early.get(dialog) if s is not None and s.phase is Phase.OFFERED else None
    if e is None or e.store_id is None:
        raise MediaError("media.unknown_session", "no keyed early dialog under this session", session=sid)
    return e, e.store_id


@request
class SessionKeys:
    session: SessionId
    dialog: SessionId | None = None


@request
class SessionReport:
    session: SessionId
    ssrc: Ssrc
    index: SrtpIndex
    srtcp_index: SrtcpIndex | None = None
    dialog: SessionId | None = None


@request
class SessionClose:
    session: SessionId


@operation("session.keys", SessionKeys)
def session_keys(ctx: Context, req: SessionKeys, peer: Peer) -> Reply:
    s = ctx.sessions.owned(req.session, peer.uid)
    if req.dialog is not None:  # an early dialog of an offer still waiting (ue_agent.ops.early)
        e, store_id = early_of(s, req.session, req.dialog)
        out = ctx.store.keys(store_id, reply=True)
        out.update(session=req.session, dialog=req.dialog, state="early", protection=e.protection.to_wire())
        return out
    if s is not None and s.phase is Phase.CLOSED and s.ended == "policy_refused":
        raise AgentError(POLICY_REFUSED, "the [policy] refused this session's keys", session=s.id)
    # the keys' wire form is encoded once per session and zeroized with it (issue 14); the
    # store's id is the peer's own namespace (media.sessions)
    k = ctx.store.keys_wire(s.key if s is not None else scoped(peer.uid, req.session), encode_value)
    if s is None:
        return keys_reply(k, None)
    if k.ssrcs:  # SSRC index reports change with every report: such replies are made anew
        k.reply_memo = None
        return keys_reply(k, s)
    memo = k.reply_memo
    made_of = _made_of(k, s)
    if memo is not None and memo[0] == made_of:
        return memo[1]  # nothing in it changed: the same reply object (ReplyEncoder reuses it)
    out = frozen(keys_reply(k, s))
    k.reply_memo = (made_of, out)
    return out


def _made_of(k: Keys, s: MediaSession) -> tuple[Any, ...]:
    """What a session.keys reply of ``k`` and ``s`` is made of, besides the SSRC reports:
    equal tuples, equal replies. ``k.wire``'s buffer by identity (a new one may hold the
    same bytes while the old one is zeroized)."""
    p = s.protection
    assert k.wire is not None
    return (
        id(k.wire[1]),
        k.public,
        k.state,
        s.phase,
        s.ended,
        s.rekey_required,
        p.fingerprint() if p is not None else None,
    )


def keys_reply(k: Keys, s: MediaSession | None) -> Reply:
    """The session.keys reply of ``k`` (and its session ``s``, when the registry has it),
    made from scratch."""
    assert k.wire is not None
    out = KeyStore.head(k, RawJson(k.wire[1]))
    if s is not None:
        out["state"] = s.key_state
        ho = s.handover
        if ho is not None:
            out["handover"] = ho.value
        if s.protection is not None:
            out["protection"] = s.protection.to_wire()
    return out


@operation("session.report", SessionReport)
def session_report(ctx: Context, req: SessionReport, peer: Peer) -> Reply:
    s = ctx.sessions.owned(req.session, peer.uid)
    if req.dialog is not None:
        _, store_id = early_of(s, req.session, req.dialog)
        got = ctx.store.report(store_id, req.ssrc, req.index, srtcp_index=req.srtcp_index)
        return {"session": req.session, "dialog": req.dialog, **got}
    return {
        "session": req.session,
        **ctx.store.report(scoped(peer.uid, req.session), req.ssrc, req.index, srtcp_index=req.srtcp_index),
    }


@operation("session.close", SessionClose)
def session_close(ctx: Context, req: SessionClose, peer: Peer) -> Reply:
    sid = req.session
    s = ctx.sessions.owned(sid, peer.uid)
    if s is not None and s.phase is Phase.OFFERED:
        # an SDES offer's keys and its early dialogs' keys: zeroized now. A pending MIKEY
        # offer holds no key of its own: the ticket key stays in the KMS client's cache (for
        # the next offer to this peer) until it expires or we stop.
        ctx.drop_offer(s)
        ctx.sessions.drop(sid, peer.uid)
        return {"session": sid, "state": "closed"}
    if s is None or s.phase is not Phase.CLOSED or s.ended not in ("policy_refused", "unprotected"):
        ctx.store.close(scoped(peer.uid, sid))  # a session ended without keys has none in the store
    ctx.sessions.drop(sid, peer.uid)
    from ue_agent.ops.conference import forget

    forget(ctx, scoped(peer.uid, sid))  # a conference session's update keys (ops/conference.py)
    return {"session": sid, "state": "closed"}
