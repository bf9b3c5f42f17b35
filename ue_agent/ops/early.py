"""Early media: keys for provisional answers (RFC 3261 13.2.2.4, RFC 3960), one set per early
dialog when the INVITE forked, updated or confirmed by the final answer; the others released.

An offer (``sdes.offer``/``mikey.offer``) may get several provisional answers (183 with SDP, or
a TRANSFER_RESP in a 183), one per early dialog; ``sdes.answer``/``mikey.complete`` with
``early: true`` and ``dialog`` key each of them while the offer keeps waiting for its final
answer. The final answer (``early`` false) names the dialog that won (``dialog``, or the early
dialog whose answer it repeats): the same answer confirms its keys (they become the session's),
a different one replaces them; every other early dialog's keys are zeroized and retired
(``released``). SDES forks share our offer's ``tx`` key (we sent one offer); the key store lets
the dialogs of one offer share that key and nothing else (``KeyStore.add(group=)``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from ue_agent.errors import AgentError
from ue_agent.media.sessions import EarlyDialog, check_session_id, new_session_id, scoped

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.media.keys import StreamKeys
    from ue_agent.media.protection import Protection
    from ue_agent.media.sessions import MediaSession
    from ue_agent.ops.context import Context

DEFAULT_DIALOG = "0"


def digest(parts: list[list[str]] | bytes) -> bytes:
    data = parts if isinstance(parts, bytes) else "\n\n".join("\n".join(p) for p in parts).encode()
    return hashlib.sha256(data).digest()


def dialog_id(dialog: str | None) -> str:
    return check_session_id(dialog) if dialog is not None else DEFAULT_DIALOG


def add_early(
    ctx: Context,
    s: MediaSession,
    dialog: str,
    streams: list[StreamKeys],
    tag: bytes,
    protection: Protection,
    peer: Peer,
) -> dict[str, Any]:
    """Key one early dialog of the offer ``s`` (checked against the [policy] first)."""
    from ue_agent.media.protection import evaluate
    from ue_agent.ops.session import POLICY_REFUSED, warn

    findings = evaluate(ctx.cfg.policy, protection)
    if any(f.refuse for f in findings):
        for st in streams:
            st.zeroize()
        warn(ctx, s.key, findings)
        kinds = [f.kind for f in findings if f.refuse]
        raise AgentError(
            POLICY_REFUSED,
            "the [policy] refuses this early dialog's protection: " + ", ".join(kinds),
            session=s.id,
            dialog=dialog,
            kinds=kinds,
        )
    old = s.early.get(dialog)
    if old is not None and old.digest == tag:  # the same provisional answer again
        for st in streams:
            st.zeroize()
        return reply(s, dialog, old)
    if old is not None:  # a new answer in the same early dialog: its keys replace the old ones
        release(ctx, [old])
    store_id = None
    if streams:
        store_id = ctx.store.add(
            streams,
            kind=s.kind,
            session_id=scoped(s.owner, new_session_id()),
            peer=f"uid:{peer.uid}",
            group=s.key,
        )
    e = s.early[dialog] = EarlyDialog(store_id, tag, protection)
    warn(ctx, s.key, findings)
    event = {"session": s.key, "kind": s.kind, "state": "early", "dialog": dialog}
    ctx.emit("session", {**event, "protection": protection.to_wire()})
    return reply(s, dialog, e)


def plain_early(ctx: Context, s: MediaSession, dialog: str, media: list[str], tag: bytes) -> dict[str, Any]:
    """A provisional answer without any key: plain early media, as the [policy] allows."""
    from ue_agent.media.protection import early_plaintext, sdes
    from ue_agent.ops.session import POLICY_REFUSED, warn

    finding = early_plaintext(ctx.cfg.policy, media)
    protection = sdes([], [], media)
    if finding is not None:
        warn(ctx, s.key, [finding])
        if finding.refuse:
            raise AgentError(
                POLICY_REFUSED,
                "the [policy] refuses plaintext early media",
                session=s.id,
                dialog=dialog,
                kinds=[finding.kind],
            )
    e = s.early[dialog] = EarlyDialog(None, tag, protection)
    return reply(s, dialog, e)


def reply(s: MediaSession, dialog: str, e: EarlyDialog) -> dict[str, Any]:
    return {
        "session": s.id,
        "dialog": dialog,
        "state": "early",
        "streams": [m for m, sc in e.protection.media.items() if sc != "none"],
        "protection": e.protection.to_wire(),
    }


def release(ctx: Context, dialogs: list[EarlyDialog]) -> None:
    """Zeroize and retire early dialogs' keys (their fingerprints can never come back)."""
    store = ctx.store_if_any
    for e in dialogs:
        if e.store_id is not None and store is not None and e.store_id in store:
            store.close(e.store_id)


def winner(early: dict[str, EarlyDialog], dialog: str | None, tag: bytes) -> str | None:
    """The early dialog the final answer belongs to: the one named, else the one whose
    answer it repeats."""
    if dialog is not None:
        return dialog if dialog in early else None
    return next((d for d, e in early.items() if e.digest == tag), None)


def finish(
    ctx: Context, s: MediaSession, dialog: str | None, tag: bytes, peer: Peer, phase: Any
) -> dict[str, Any] | None:
    """The final answer repeats the winning early dialog's answer: its keys become the
    session's, the other dialogs' keys are released; the reply. None when the final answer
    must be keyed on its own (see :func:`settle` for the release afterwards)."""
    from ue_agent.ops.session import session_event

    won = winner(s.early, dialog, tag)
    e = s.early.get(won) if won is not None else None
    if e is None or e.digest != tag or e.store_id is None:
        return None
    others = {d: x for d, x in s.early.items() if d != won}
    s.early = {}
    ctx.store.rename(e.store_id, s.key)
    release(ctx, list(others.values()))
    media = [m for m, sc in e.protection.media.items() if sc != "none"]
    ctx.sessions.activate(s.id, s.owner, s.kind, phase, media)
    s.protection = e.protection
    ctx.emit("session", session_event(s))
    return {"early": {"confirmed": won, "released": sorted(others)}}


def settle(ctx: Context, early: dict[str, EarlyDialog], dialog: str | None, tag: bytes) -> dict[str, Any]:
    """After the final answer was keyed on its own: every early dialog's keys go (the winner's
    were replaced by the final answer's)."""
    won = winner(early, dialog, tag)
    release(ctx, list(early.values()))
    out: dict[str, Any] = {"released": sorted(early)}
    if won is not None:
        out["updated"] = won
    return {"early": out} if early else {}
