"""An independent MIKEY-TICKET (RFC 6043) implementation for interoperability tests.

Written only from RFC 6043, RFC 3830, RFC 4563 and the IANA MIKEY registry; it does not import ue_agent.
See README.md for the scope, the clause behind each rule and the readings accepted where the text leaves a
choice.

- decode(bytes, initial=...) -> Decoded: strict decoder of REQUEST_INIT_PSK, REQUEST_RESP, TRANSFER_INIT,
  TRANSFER_RESP, RESOLVE_INIT_PSK, RESOLVE_RESP and Error messages (MikeyReject names the clause).
- verify_mac / mac_input / protection_keys: MAC coverage (5.5, 5.4) and the keys of 5.1.2.
- prf: the MIKEY PRFs and the derivations of 5.1.1, 5.1.2, 5.1.3, A.2.
- KmsEngine: KMS for the Ticket Request and Ticket Resolve exchanges, issuing MIKEY base tickets (Appendix A);
  KmsEngine.audit_transfer() gives, from the KMS's keys, every crypto session's SRTP master key and salt.
- Peer: Initiator (REQUEST_INIT, TRANSFER_INIT) and Responder (RESOLVE_INIT, TRANSFER_RESP).
"""

from . import algs, prf, wire
from .errors import MikeyReject
from .keys import ProtKeys, decrypt_kemac, encrypt_kemac, protection_keys
from .kms import KmsEngine, KmsEvent, build_error
from .messages import Decoded, decode, mac_input, signed_part, verify_mac
from .peer import IssuedTicket, MikeyErrorReceived, Peer, Resolved, srtp_cs
from .session import CsKeys, TransferKeys, check_transfer, derive_cs_keys
from .ticket import build_base_ticket, open_base_ticket

__all__ = [
    "CsKeys",
    "Decoded",
    "IssuedTicket",
    "KmsEngine",
    "KmsEvent",
    "MikeyErrorReceived",
    "MikeyReject",
    "Peer",
    "ProtKeys",
    "Resolved",
    "TransferKeys",
    "algs",
    "build_base_ticket",
    "build_error",
    "check_transfer",
    "decode",
    "decrypt_kemac",
    "derive_cs_keys",
    "encrypt_kemac",
    "mac_input",
    "open_base_ticket",
    "prf",
    "protection_keys",
    "signed_part",
    "srtp_cs",
    "verify_mac",
    "wire",
]
