"""Communication diversion for MIKEY-TICKET calls (TR 33.829 9.2, 9.3; docs/kms.md).

- ``mikey.divert``: the diverting user's agent (B) lets the KMS accept the diverted-to user (C)
  for the ticket of a TRANSFER_INIT it received (``KmsClient.authorize_divert``).
- ``mikey.answer`` with ``cdiv_as`` (solution #1): the diverted-to user's RESOLVE_INIT carries the
  diversion indication and the CDIV AS identity; the KMS asks that AS (:func:`diversion_of`).
- solution #2: a diverted-to user that cannot resolve answers with an Error message naming itself
  (:func:`refusal_message`); the caller's ``mikey.complete`` turns it into the dedicated result
  ``state: "diverted"`` naming the diverted-to user (:func:`diverted_result`), and the caller
  sends a new ``mikey.offer`` to that user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.errors import AgentError
from ue_agent.ops.declare import Reply, Text, operation, request
from ue_agent.ops.mikey import mikey_message  # also declares mikey.offer/answer/complete before mikey.divert

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.kms.divert import Diversion
    from ue_agent.kms.session import PendingOffer
    from ue_agent.media.sessions import MediaSession
    from ue_agent.ops.context import Context


@request
class MikeyDivert:
    transfer_init: Text
    to: Text


@operation("mikey.divert", MikeyDivert)
async def mikey_divert(ctx: Context, req: MikeyDivert, peer: Peer) -> Reply:
    """As the called party (a recipient of the ticket), authorize ``to`` at the KMS."""
    from ue_agent.kms import ids

    message = mikey_message(req.transfer_init, "transfer_init")
    try:
        target = ids.canonical(req.to)
    except AgentError:
        raise api_error(BAD_REQUEST, "'to' is not a SIP or tel identity", param="to") from None
    kms = await ctx.network.kms()
    await kms.authorize_divert(message, target)
    return {"diverted_to": target, "authorized": True}


def diversion_of(served: str | None, cdiv_as: str | None, transfer_init: bytes) -> Diversion | None:
    """``mikey.answer``'s ``diverted_from``/``cdiv_as`` -> the diversion to carry in RESOLVE_INIT
    (None without ``cdiv_as``); the served user defaults to the TRANSFER_INIT's IDRr."""
    if cdiv_as is None:
        if served is not None:
            raise api_error(BAD_REQUEST, "'diverted_from' needs 'cdiv_as'", param="cdiv_as")
        return None
    from ue_agent.kms import divert, session

    if served is None:
        served = session.inspect_transfer_init(transfer_init).responder
        if served is None:
            raise api_error(
                BAD_REQUEST, "the TRANSFER_INIT names no IDRr: give 'diverted_from'", param="diverted_from"
            )
    try:
        return divert.Diversion.of(served, cdiv_as)
    except AgentError:
        raise api_error(
            BAD_REQUEST, "'diverted_from' or 'cdiv_as' is not a usable identity", param="cdiv_as"
        ) from None


def refusal_message(exc: AgentError, transfer_init: bytes, own: str) -> bytes | None:
    """Solution #2: the Error message naming us when the KMS refused us a ticket that names
    someone else (a diverted call); None when it is not such a case."""
    if exc.code != "kms.not_authorized":
        return None
    from ue_agent.kms import divert, ids, session

    try:
        called = session.inspect_transfer_init(transfer_init).responder
    except AgentError:
        return None
    if called is None or called == ids.canonical(own):
        return None
    exc.details.update(diverted_to=ids.canonical(own), diverted_from=called)
    return divert.diverted_error(transfer_init, own, called)


def diverted_result(ctx: Context, offer: MediaSession, message: bytes, peer: Peer) -> Reply | None:
    """Solution #2 at the caller: the answer is the diverted-to user's Error message -> the offer
    ends (its ticket names the party called) and the reply names whom to offer to instead."""
    from ue_agent.kms import divert

    pending: PendingOffer = offer.offer  # type: ignore[assignment]
    got = divert.diverted_to(message, pending.message.header.csb_id, offer.requested or pending.peer)
    if got is None:
        return None
    ctx.sessions.end(offer.id, peer.uid, "mikey", "diverted")
    return {"session": offer.id, "state": "diverted", **got}
