"""The lab KMS: MIKEY-TICKET Ticket Request / Ticket Resolve over GBA-authenticated HTTP.

``POST /mikey`` with ``Content-Type: application/mikey`` (TS 33.328 binding, see
``ue_agent.kms.ts33328``). The Ua digest (NafAuth middleware) authenticates the UE and gives
its IMPI, B-TID and Ks_NAF; the front refuses a message whose IDRpsk is not that B-TID and
hands the body to a :class:`~ue_agent.kms.service.KmsEngine` (``handle(bytes) -> bytes``),
whose pre-shared key lookup answers with the authenticated peer's Ks_NAF only. The engine is
the lab's :class:`KmsService` unless another one (e.g. an independent implementation) is given.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

from ue_agent.errors import MikeyError
from ue_agent.kms import mikey, ts33328
from ue_agent.kms.service import KmsEngine, KmsService, reply_status
from ue_agent.secret import Secret

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
KMS_PATH = ts33328.HTTP_PATH
CONTENT_TYPE = ts33328.CONTENT_TYPE

_PEER: contextvars.ContextVar[Any] = contextvars.ContextVar("kms_peer")


def _identities(network: Any) -> dict[str, list[str]]:
    subs = getattr(network, "subscribers", [])
    return {s.impi: list(s.impu) for s in (subs.values() if isinstance(subs, dict) else subs)}


def peer_psk(idr_psk: bytes | None) -> Secret | None:
    """PSK lookup for an engine: the Ks_NAF of the peer the HTTP digest authenticated, for its
    B-TID (or for a request without IDRpsk)."""
    peer = _PEER.get(None)
    if peer is None or (idr_psk is not None and idr_psk != peer.btid.encode()):
        return None
    return peer.ks_naf


def _cdiv_question(network: Any):
    """The lab KMS asks the network's lab CDIV AS (``network.cdiv_as``, TR 33.829 9.2), if any."""
    cdiv = getattr(network, "cdiv_as", None)
    return cdiv.confirm if cdiv is not None else None


def _focus_identities(network: Any) -> list[str]:
    """The identities of the network's conference focus (lab/focus.py): the only ones this KMS
    lets supply session keys (RFC 6043 6.10 L/M); none when the network has no focus."""
    focus = getattr(network, "focus_subscriber", None)
    return list(focus.impu) if focus is not None else []


def create_kms_app(
    naf_auth: Any, network: Any, *, service: KmsService | None = None, engine: KmsEngine | None = None
):
    """The KMS aiohttp application for ``naf_auth.naf_fqdn`` (the engine is ``app[KMS_SERVICE]``)."""
    from aiohttp import web

    from ue_agent.lab.naf import peer_of

    clock = getattr(network, "clock", None)
    table = _identities(network)

    def identities_of(idr_psk: bytes | None) -> list[str]:
        peer = _PEER.get(None)
        return table.get(peer.impi, []) if peer is not None else []

    eng: KmsEngine = (
        engine
        or service
        or KmsService(
            naf_auth.naf_fqdn,
            peer_psk,
            identities_of,
            cdiv_as=_cdiv_question(network),
            focus_identities=_focus_identities(network),
            **({"clock": clock} if clock is not None else {}),
        )
    )

    async def mikey_endpoint(request: web.Request) -> web.Response:
        ctype = request.content_type.lower()
        if ctype != CONTENT_TYPE:
            return web.Response(status=415, text=f"Content-Type must be {CONTENT_TYPE}\n")
        body = await request.read()
        peer = peer_of(request)
        try:
            psk_id = mikey.Message.decode(body).first(mikey.IdRole, mikey.ROLE_PSK)
        except MikeyError:
            psk_id = None
        if psk_id is not None and psk_id.data != peer.btid.encode():
            log.info("KMS: IDRpsk is not the authenticated B-TID %s", peer.btid)
        token = _PEER.set(peer)
        try:
            reply = eng.handle(body)
        finally:
            _PEER.reset(token)
        status = reply_status(reply)
        if status != 200:
            log.info("KMS refused %s (%s): HTTP %d", peer.btid, peer.impi, status)
        return web.Response(status=status, body=reply, content_type=CONTENT_TYPE)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[naf_auth.middleware()])
    app[KMS_SERVICE] = eng
    app.router.add_post(KMS_PATH, mikey_endpoint)
    network.kms_service = eng
    return app


def _app_key() -> Any:
    from aiohttp import web

    key_type = getattr(web, "AppKey", None)
    return key_type("kms_service", object) if key_type is not None else "kms_service"


KMS_SERVICE = _app_key()
