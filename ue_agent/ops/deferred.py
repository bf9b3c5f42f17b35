"""Deferred delivery (TR 33.828 requirement 52, 4.2.4, 7.1.2, 7.1.3): ``mikey.offer`` with
``deferred`` (the sender's keys at offer time, from a one-way ticket) and
``mikey.resolve_stored`` (the receiver, later, with a TRANSFER_INIT a mailbox kept: bounded
by the ticket's expiry instead of the 300 s window, the replay cache still in force).
The MIKEY side is :mod:`ue_agent.kms.deferred`; docs/kms.md "Deferred delivery"."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ue_agent.media.sessions import Phase
from ue_agent.ops.aka import b64
from ue_agent.ops.declare import Reply, SessionId, Text, TextList, operation, request
from ue_agent.ops.mikey import mikey_message, mikey_stream, mikey_streams
from ue_agent.ops.session import register

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context
    from ue_agent.ops.mikey import MikeyOffer


async def offer_deferred(ctx: Context, req: MikeyOffer, peer: Peer) -> Reply:
    """``mikey.offer`` with ``deferred``: a one-way ticket, the session active at once."""
    from ue_agent.kms import deferred
    from ue_agent.kms.sdp import build
    from ue_agent.media.protection import mikey_caller

    if req.group:
        from ue_agent.api.errors import BAD_REQUEST, api_error

        raise api_error(
            BAD_REQUEST, "'deferred' asks for a one-way ticket, not a group ticket", param="group"
        )
    ctx.sessions.check_room("sessions", offer=False)
    sid = ctx.sessions.new_id(req.session, peer.uid)
    media = [mikey_stream(m, req.suite) for m in req.media]
    kms = await ctx.network.kms()
    res = await kms._track(
        deferred.offer_one_way(
            kms.client, req.responder, media, recipients=req.recipients, validity=req.validity
        )
    )
    ctx.sessions.check_room("sessions", offer=False)
    streams = mikey_streams(res.keys, req.media)
    # nobody has answered: the peer is the party called, and only the ticket's recipients can
    # resolve the keys (the KMS checks them), which is what peer_authenticated cannot say yet
    base = mikey_caller([s.media for s in streams], res.peer, False, req.responder, res.recipients)
    protection = dataclasses.replace(base, peer=None, intended=None, in_recipients=None)
    register(ctx, sid, streams, "mikey", peer, Phase.ACTIVE, protection)
    return {
        "session": sid,
        "transfer_init": b64(res.transfer_init),
        "key_mgmt": build(res.transfer_init),
        "reused_ticket": False,
        "state": "active",
        "streams": [s.media for s in streams],
        "protection": protection.to_wire(),
        "expires": int(res.expiry),
    }


@request
class MikeyResolveStored:
    session: SessionId | None = None
    transfer_init: Text
    media: TextList | None = None


@operation("mikey.resolve_stored", MikeyResolveStored)
async def mikey_resolve_stored(ctx: Context, req: MikeyResolveStored, peer: Peer) -> Reply:
    from ue_agent.kms import deferred
    from ue_agent.media.protection import mikey_callee

    ctx.sessions.check_room("sessions", offer=False)
    sid = ctx.sessions.new_id(req.session, peer.uid)
    message = mikey_message(req.transfer_init, "transfer_init")
    kms = await ctx.network.kms()
    res = await kms._track(deferred.resolve_stored(kms.client, message))
    streams = mikey_streams(res.keys, req.media)
    protection = mikey_callee([s.media for s in streams], res.peer_uri)
    # several recipients: any of them could have written it (kms/deferred.py sole_recipient)
    protection.peer_authenticated = res.peer_authenticated
    register(ctx, sid, streams, "mikey", peer, Phase.ANSWERED, protection)
    return {
        "session": sid,
        "peer": res.peer_uri,
        "protection": protection.to_wire(),
        "streams": [s.media for s in streams],
        "sent": int(res.sent),
        "expires": int(res.expiry),
    }
