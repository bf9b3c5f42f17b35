"""Everything of the KMS path that depends on 3GPP TS 33.328 rather than on RFC 6043 / RFC 3830.

TS 33.328 was not readable here; each item below is this project's choice, kept in this one
module so that an operator profile replaces it in one place (docs/kms.md "TS 33.328 seam"):

- the HTTP binding of Ticket Request / Ticket Resolve (RFC 6043 7 leaves it to TS 33.328):
  ``POST <kms_url>/mikey`` with ``Content-Type: application/mikey`` (RFC 3830's media type),
  the KMS being a GBA NAF with Ua security protocol identifier 01 00 00 00 06 (TS 33.220 H.3);
- the pre-shared key of those exchanges: Ks_NAF of the KMS NAF_Id, named by the B-TID in IDRpsk;
- the PSK identity of a TLS crypto session (MSRP, BFCP; TS 33.328 Annex H: PSK = TEK);
- the ticket types a UE accepts: Ticket Data is opaque to a UE, so it accepts the MIKEY base
  ticket (type 1, RFC 6043 Appendix A) and the 3GPP base ticket (type 2) without reading either.
"""

from __future__ import annotations

import base64

from ue_agent.crypto.kdf import UA_KMS
from ue_agent.kms import mikey

HTTP_PATH = "/mikey"
CONTENT_TYPE = "application/mikey"
UA_PROTOCOL_ID = UA_KMS
ACCEPTED_TICKET_TYPES = frozenset({mikey.TICKET_MIKEY_BASE, mikey.TICKET_3GPP_BASE})
PSK_ID_TYPE = mikey.ID_NAI  # IDRpsk carries the B-TID, which has NAI form (TS 33.220)


def tls_psk_identity(csb_id: int, cs_id: int, rand_i: bytes) -> str:
    """PSK identity of the TLS crypto session ``cs_id``: base64(CSB ID || CS ID || RANDRi[:7])."""
    return base64.b64encode(csb_id.to_bytes(4, "big") + bytes([cs_id]) + rand_i[:7]).decode()
