"""The lab KMS: MIKEY-TICKET Ticket Request / Ticket Resolve over GBA-authenticated HTTP.

``POST /mikey`` with ``Content-Type: application/mikey``; the Ua digest (NafAuth middleware)
authenticates the UE and gives its IMPI, B-TID and Ks_NAF; :class:`KmsService` decides.
Answers are ``application/mikey`` (a RESP message, or a MIKEY error message with 400/403).
"""

from __future__ import annotations

import logging

from ue_agent.kms.service import KmsService

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
KMS_PATH = "/mikey"
CONTENT_TYPE = "application/mikey"


def _identities(network):
    subs = getattr(network, "subscribers", [])
    table = {s.impi: list(s.impu) for s in (subs.values() if isinstance(subs, dict) else subs)}

    def identities_of(impi: str) -> list[str]:
        return table.get(impi, [])

    return identities_of


def create_kms_app(naf_auth, network, *, service: KmsService | None = None):
    """The KMS aiohttp application for ``naf_auth.naf_fqdn`` (the service is ``app[KMS_SERVICE]``)."""
    from aiohttp import web

    from ue_agent.lab.naf import peer_of

    clock = getattr(network, "clock", None)
    svc = service or KmsService(
        naf_auth.naf_fqdn, _identities(network), **({"clock": clock} if clock is not None else {})
    )

    async def mikey_endpoint(request: web.Request) -> web.Response:
        ctype = request.content_type.lower()
        if ctype != CONTENT_TYPE:
            return web.Response(status=415, text=f"Content-Type must be {CONTENT_TYPE}\n")
        body = await request.read()
        peer = peer_of(request)
        reply = svc.handle(body, peer.impi, peer.btid, peer.ks_naf)
        if reply.status != 200:
            log.info("KMS refused %s (%s): HTTP %d", peer.btid, peer.impi, reply.status)
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)

    app = web.Application(client_max_size=MAX_BODY, middlewares=[naf_auth.middleware()])
    app[KMS_SERVICE] = svc
    app.router.add_post(KMS_PATH, mikey_endpoint)
    network.kms_service = svc
    return app


def _app_key():
    from aiohttp import web

    key_type = getattr(web, "AppKey", None)
    return key_type("kms_service", KmsService) if key_type is not None else "kms_service"


KMS_SERVICE = _app_key()
