"""``message.protect`` / ``message.unprotect``: pager-mode MESSAGE bodies (RFC 3428) protected end
to end with MIKEY-TICKET keys for one or several recipients (TR 33.829 clause 8), one way from
the ticket, with the e2m indication. The MIKEY side is :mod:`ue_agent.kms.messaging`;
docs/kms.md "IMS messaging", docs/api.md."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.ops.aka import b64
from ue_agent.ops.declare import Reply, Text, TextList, Validity, operation, request
from ue_agent.ops.mikey import mikey_message

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context


def _bytes(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(BAD_REQUEST, f"'{name}' must be base64", param=name) from None


@request
class MessageProtect:
    recipients: TextList
    body: Text
    content_type: Text = "text/plain"
    e2m: Text | None = None
    validity: Validity | None = None


@request
class MessageUnprotect:
    transfer_init: Text
    body: Text


@operation("message.protect", MessageProtect)
async def message_protect(ctx: Context, req: MessageProtect, peer: Peer) -> Reply:
    from ue_agent.kms import messaging

    if not req.recipients:
        raise api_error(BAD_REQUEST, "'recipients' names at least one URI", param="recipients")
    body = _bytes(req.body, "body")
    kms = await ctx.network.kms()
    res = await kms._track(
        messaging.protect_message(
            kms.client, list(req.recipients), body, req.content_type, e2m=req.e2m, validity=req.validity
        )
    )
    return {
        "transfer_init": b64(res.transfer_init),
        "body": b64(res.body),
        "mode": "e2m" if req.e2m else "e2e",
        "recipients": res.recipients,
        "expires": int(res.expiry),
    }


@operation("message.unprotect", MessageUnprotect)
async def message_unprotect(ctx: Context, req: MessageUnprotect, peer: Peer) -> Reply:
    from ue_agent.kms import messaging

    message = mikey_message(req.transfer_init, "transfer_init")
    body = _bytes(req.body, "body")
    kms = await ctx.network.kms()
    res = await kms._track(messaging.unprotect_message(kms.client, message, body))
    out: Reply = {
        "sender": res.sender,
        "sender_authenticated": res.sender_authenticated,  # the ticket names this receiver alone
        "content_type": res.content_type,
        "body": b64(res.body),
        "mode": "e2m" if res.e2m else "e2e",
        "recipients": res.recipients,
        "sent": int(res.sent),
    }
    if res.e2m:
        out["middle"] = res.e2m
    return out
