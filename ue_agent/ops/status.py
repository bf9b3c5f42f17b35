"""``status`` and ``capabilities``: what the agent is and can do (memory only, answered at once)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ue_agent import __version__
from ue_agent.ops.declare import Reply, operation, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context


@request
class Status:
    pass


@request
class Capabilities:
    pass


@operation("status", Status)
def status(ctx: Context, req: Status, peer: Peer) -> Reply:
    # root sees every uid's sessions; any other peer only its own (counts included)
    return status_of(ctx, None if peer.uid == 0 else peer.uid)


def status_of(ctx: Context, uid: int | None = None) -> Reply:
    """The status reply; with ``uid``, session counts cover only that uid's sessions."""
    ids = ctx.identities
    card: dict[str, Any] = {
        "transport": ctx.cfg.card.transport,
        "present": bool(ctx.card.state.get("present")),
        "busy": ctx.card.busy,
    }
    if ctx.card.state.get("error"):
        card["error"] = ctx.card.state["error"]
    card.update(ctx.card.health())  # resets noticed; an AT port's resyncs, late lines, resets
    if ids is not None:
        card.update(application=ids.application, impi=ids.impi, impus=list(ids.impus), domain=ids.domain)
    if ctx.pin is not None:
        card["pin"] = ctx.pin.snapshot()
    out: Reply = {
        "agent": {"version": __version__, "uptime_s": int(time.time() - ctx.started)},
        "card": card,
        "counters": dict(ctx.counters),
        "handover": ctx.handover.snapshot(uid),
    }
    out.update(ctx.network.status())
    ctx.sessions.reap()  # offers past their TTL are not counted (nor kept)
    out["sessions"] = {
        "open": ctx.sessions.count_live(uid),
        "pending_offers": ctx.sessions.count_pending(uid),
        "by_state": ctx.sessions.count_by_state(uid),
    }
    for extra in ctx.extra_status:
        out.update(extra())
    return out


@operation("capabilities", Capabilities)
def capabilities(ctx: Context, req: Capabilities, peer: Peer) -> Reply:
    kms_url = ctx.cfg.network.kms_url
    if ctx.caps is None or ctx.caps[0] != kms_url:  # first call, or a reload changed it
        from ue_agent.media.capabilities import device_capabilities

        ctx.caps = (kms_url, device_capabilities(kms_url=kms_url).to_wire())
    # The cached inner objects are shared between replies: they are only serialized.
    caps = dict(ctx.caps[1])
    caps["aka"] = {"application": ctx.identities.application if ctx.identities else None}
    return caps
