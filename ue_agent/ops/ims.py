"""``ims.mediasec``: the media-security agreement of REGISTER (TS 24.229 7.2A.7, RFC 3329,
TS 33.328 e2ae): the P-CSCF's ``Security-Server`` in, the ``Security-Verify`` to send and the
mechanisms both sides support out. Memory only, answered at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ue_agent.ops.declare import Reply, Text, TextList, operation, request

if TYPE_CHECKING:
    from ue_agent.api.core import Peer
    from ue_agent.ops.context import Context


@request
class ImsMediasec:
    #: the P-CSCF's Security-Server header value, as received (ipsec-3gpp entries may be in it)
    security_server: Text
    #: the mechanisms our Security-Client listed (default: what ``capabilities`` advertises)
    security_client: TextList | None = None


@operation("ims.mediasec", ImsMediasec)
def ims_mediasec(ctx: Context, req: ImsMediasec, peer: Peer) -> Reply:
    from ue_agent.media.capabilities import device_capabilities
    from ue_agent.media.e2ae import negotiated, security_verify_value

    ours = req.security_client
    if ours is None:
        ours = list(device_capabilities(kms_url=ctx.cfg.network.kms_url).e2ae_mechanisms)
    both = negotiated(ours, req.security_server)
    return {
        "security_verify": security_verify_value(req.security_server),
        "mechanisms": both,
        # e2ae may be requested in SDP (a=3ge2ae:requested) only when both sides support it
        "e2ae": "sdes-srtp" in both,
    }
