"""``conference.update`` and the conference side of ``mikey.complete``/``mikey.answer``: group keys
chosen by a focus (MRFC/MRFP, TR 33.829 5.1.3, 5.3.2; RFC 6043 4.2.2.3, 5.2, 9).

A member joins by calling the focus (dial-in: its TRANSFER_RESP carries the group keys in a
KEMAC) or being called (dial-out: the TRANSFER_INIT does). Either way the session's SRTP streams
use the group key of the current generation, the focus's choice of SSRC included, and the agent
keeps the session's :class:`~ue_agent.kms.conference.Link` for the focus's CSB updates: each
join and leave brings a new generation, given to ``conference.update``, which re-keys the
session in the key store and sends a ``session`` event naming the generation.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

from ue_agent.errors import MediaError
from ue_agent.ops.declare import Reply, SessionId, Text, operation, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.kms.conference import Link
    from ue_agent.kms.session import PendingOffer
    from ue_agent.kms.streams import StreamKeyPair
    from ue_agent.ops.context import Context

#: the links of each agent's conference sessions, by session id
_LINKS: weakref.WeakKeyDictionary[Context, dict[str, Link]] = weakref.WeakKeyDictionary()


def _links(ctx: Context) -> dict[str, Link]:
    links = _LINKS.setdefault(ctx, {})
    for sid in [sid for sid in links if (s := ctx.sessions.get(sid)) is None or not s.live]:
        links.pop(sid).zeroize()  # the session ended: its link goes with it
    return links


def forget(ctx: Context, sid: str) -> None:
    """The session ``sid`` is closed: its link's keys are zeroized."""
    links = _LINKS.get(ctx)
    link = links.pop(sid, None) if links else None
    if link is not None:
        link.zeroize()


def after_complete(
    pending: PendingOffer, transfer_resp: bytes, keys: list[StreamKeyPair]
) -> tuple[list[StreamKeyPair], Link | None]:
    """Dial-in: the focus's keys of a verified TRANSFER_RESP replace the derived SRTP keys."""
    from ue_agent.kms import conference

    try:
        got = conference.member_after_complete(pending, transfer_resp, keys)
    except Exception:
        for k in keys:
            k.zeroize()
        raise
    return (keys, None) if got is None else got


def keep(ctx: Context, sid: str, link: Link | None) -> dict[str, Any]:
    """Keep a registered session's link for its updates; the result's ``conference`` field."""
    if link is None:
        return {}
    links = _links(ctx)
    old = links.pop(sid, None)
    if old is not None:
        old.zeroize()
    links[sid] = link
    ctx.keys.add(link.keys.encr, link.keys.salt, link.keys.auth)
    return {"conference": {"generation": link.generation}}


@request
class ConferenceUpdate:
    session: SessionId
    #: the focus's CSB update (a TRANSFER_INIT, RFC 6043 5.2): base64 or the a=key-mgmt line
    key_mgmt: Text


@operation("conference.update", ConferenceUpdate)
def conference_update(ctx: Context, req: ConferenceUpdate, peer: Peer) -> Reply:
    from ue_agent.kms import conference
    from ue_agent.media.keys import StreamKeys
    from ue_agent.ops.mikey import mikey_message
    from ue_agent.ops.session import session_event

    sid = req.session
    s = ctx.sessions.owned(sid, peer.uid)
    link = _links(ctx).get(sid)
    if s is None or link is None:
        raise MediaError(
            "media.unknown_session", "no conference session keyed by a focus under this id", session=sid
        )
    raw = mikey_message(req.key_mgmt, "key_mgmt")
    names = [st.media for st in ctx.store.streams(sid)]
    got, generation, moved = conference.read_update(link, raw, time.time())
    new = {i: StreamKeys(names[i], tx=p.tx, rx=p.rx) for i, p in got.items()}
    ctx.store.rekey(sid, new)
    ssrcs = {names[i]: ssrc for i, ssrc in moved.items()}
    event = {**session_event(s), "generation": generation, "rekeyed": [names[i] for i in sorted(new)]}
    if ssrcs:
        event["ssrc"] = ssrcs
    ctx.emit("session", event)
    return {
        "session": sid,
        "state": s.key_state,
        "generation": generation,
        "rekeyed": event["rekeyed"],
        **({"ssrc": ssrcs} if ssrcs else {}),
    }
