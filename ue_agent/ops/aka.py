"""``ims.authenticate``: IMS AKA on the card (RFC 3310 / TS 33.203), through the card worker."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.errors import AgentError, CardError
from ue_agent.ops.declare import Bytes16, Reply, Text, operation, request
from ue_agent.secret import Secret, SecretText

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@request
class ImsAuthenticate:
    rand: Bytes16 | None = None
    autn: Bytes16 | None = None
    nonce: Text | None = None


def split_nonce(nonce: str) -> tuple[bytes, bytes]:
    """RFC 3310 nonce: base64(RAND || AUTN || server data) -> (RAND, AUTN)."""
    try:
        raw = base64.b64decode(nonce, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(BAD_REQUEST, "parameter 'nonce' must be base64", param="nonce") from None
    if len(raw) < 32:
        raise api_error(BAD_REQUEST, "parameter 'nonce' must hold RAND and AUTN (32 bytes)", param="nonce")
    return raw[:16], raw[16:32]


@operation("ims.authenticate", ImsAuthenticate)
async def ims_authenticate(ctx: Context, req: ImsAuthenticate, peer: Peer) -> Reply:
    if req.nonce is not None:
        if req.rand is not None or req.autn is not None:
            raise api_error(BAD_REQUEST, "give either 'nonce' or 'rand' and 'autn'", param="nonce")
        rand, autn = split_nonce(req.nonce)
    elif req.rand is not None and req.autn is not None:
        rand, autn = req.rand, req.autn
    else:
        raise api_error(BAD_REQUEST, "'rand' and 'autn' (or 'nonce') are required", param="rand")
    from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure

    outcome = await ctx.card.call(lambda card: card.authenticate(rand, autn))
    ctx.counters["authentications"] += 1
    if isinstance(outcome, AkaSuccess):
        try:
            # copies the reply encoder writes as base64 and then zeroizes
            out = {
                "result": "success",
                "res": SecretText(Secret.concat([outcome.res]), owned=True),
                "ck": SecretText(Secret.concat([outcome.ck]), owned=True),
                "ik": SecretText(Secret.concat([outcome.ik]), owned=True),
            }
        finally:
            outcome.zeroize()
        return out
    if isinstance(outcome, AkaSyncFailure):
        ctx.counters["sync_failures"] += 1
        return {"result": "sync_failure", "auts": b64(outcome.auts)}
    if isinstance(outcome, AkaMacFailure):
        ctx.counters["mac_failures"] += 1
        ctx.emit(
            "security.warning",
            {"kind": "auth_mac_failure", "message": "the card rejected the network's AUTN (MAC)"},
        )
        raise CardError("card.auth_mac_failure", "the card found the network's MAC wrong (AUTN rejected)")
    raise AgentError("agent.internal", "unexpected card outcome")
