"""Caller anonymity (TR 33.828 requirement 49) for MIKEY-TICKET, sans-IO.

The caller asks for anonymity in its REQUEST_INIT with the General Extension ``EXT_ANONYMOUS``
(private use, RFC 3830 6.15) while its IDRi still names it, so the KMS authenticates it as usual.
The KMS then grants a Ticket Policy whose IDRi is the anonymous URI of RFC 3323 4.1.1.3
(``sip:anonymous@anonymous.invalid``; the K flag says the KMS changed the policy, RFC 6043 6.10)
and keeps the real initiator in its own records, not in the ticket (RFC 6043 12.1: "Privacy
Enhancing Technologies (PET) like anonymous or temporary credentials MAY be used"). The caller's
TRANSFER_INIT names the same anonymous URI in IDRi, which its MAC covers (5.5).

When the KMS resolves such a ticket it adds ``EXT_ANONYMOUS`` to the RESOLVE_RESP, under the
response's MAC: "the initiator authenticated to me; its identity is withheld". The callee's agent
reports the peer as ``anonymous`` and whether the KMS vouched for it (docs/kms.md "Caller anonymity").
The real identity never reaches the callee: it is in no message the callee receives.
"""

from __future__ import annotations

from ue_agent.kms import ids, mikey

EXT_ANONYMOUS = 251  # private use (this project): anonymity asked (REQUEST_INIT) / vouched (RESOLVE_RESP)
#: RFC 3323 4.1.1.3: the URI of an anonymous From header
ANONYMOUS_URI = "sip:anonymous@anonymous.invalid"
#: what the callee's softphone is shown as the peer
ANONYMOUS = "anonymous"


def request() -> mikey.GeneralExt:
    """The extension a REQUEST_INIT carries to ask for an anonymous ticket."""
    return mikey.GeneralExt(EXT_ANONYMOUS, b"")


def voucher() -> mikey.GeneralExt:
    """The KMS's statement in RESOLVE_RESP that it authenticated the (withheld) initiator."""
    return mikey.GeneralExt(EXT_ANONYMOUS, b"")


def asked(msg: mikey.Message) -> bool:
    return vouched(msg.all(mikey.GeneralExt))  # the same extension, in a REQUEST_INIT


def vouched(extensions: list[mikey.GeneralExt]) -> bool:
    return any(x.ext_type == EXT_ANONYMOUS for x in extensions)


def is_anonymous(identity: str | None) -> bool:
    return identity is not None and ids.canonical(identity) == ANONYMOUS_URI
