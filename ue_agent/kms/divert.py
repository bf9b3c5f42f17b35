"""Communication diversion (TR 33.829 9.2, 9.3) for MIKEY-TICKET, sans-IO: the wire items and the KMS rule.

A calls B; the network diverts the call to C. The ticket in the TRANSFER_INIT names B, so C is
outside its recipients. Three ways on, each with its own encoding (docs/kms.md "Communication
diversion"; General Extension types from the private-use range 241-255, RFC 3830 6.15):

- **Solution #1 (TR 33.829 9.2), the KMS asks the CDIV AS.** C's RESOLVE_INIT carries the
  diversion indication (type ``EXT_DIVERSION``: the diverting, served user B) and the identity of
  the CDIV AS that diverted the call (type ``EXT_CDIV_AS``). The KMS asks that AS whether C is B's
  diverted-to user for this ticket (:data:`CdivQuestion`); only a "yes" resolves the ticket for C,
  and the RESOLVE_RESP echoes both items. C is then remembered for the ticket until its TRe.
- **Authorization by the diverting user** (``EXT_DIVERT``, TR 33.829 9.3.2): B's agent, a
  recipient, names C in a RESOLVE_INIT of its own (``KmsClient.authorize_divert``, socket op
  ``mikey.divert``); the KMS then accepts C for the ticket until its TRe.
- **Solution #2 (TR 33.829 9.3), the caller re-offers.** When C cannot resolve, C answers the
  TRANSFER_INIT with an Error message (RFC 6043 5.4) ERR 242 carrying General Extensions (RFC 3830
  6.15: "can be used in any MIKEY message"; 5.4 allows no IDR there) naming C (``EXT_DIVERT``) and
  the diverting user B (``EXT_DIVERSION``); the caller's agent reads it as the dedicated result
  "diverted to C" (:func:`diverted_to`) and the caller sends a new offer with a ticket for C.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ue_agent.errors import AgentError, MikeyError
from ue_agent.kms import ids, mikey

EXT_DIVERT = mikey.EXT_DIVERT  # 241: the diverted-to identity, named by the diverting user
EXT_DIVERSION = 248  # private use (this project): diversion indication = the diverting (served) user
EXT_CDIV_AS = 249  # private use (this project): the CDIV AS that diverted the call

#: the KMS's question to a CDIV AS: (AS identity, served user, diverted-to user, ticket reference)
#: -> True (confirmed), False (denied), None (no such AS known to the KMS)
CdivQuestion = Callable[[str, str, str, bytes], "bool | None"]


def ticket_ref(ticket_data: bytes) -> bytes:
    """What names a call's ticket between the KMS and a CDIV AS: SHA-256 of the Ticket Data (the AS
    saw the TRANSFER_INIT in the diverted INVITE's SDP, the KMS sees it in RESOLVE_INIT)."""
    return hashlib.sha256(ticket_data).digest()


@dataclass(frozen=True)
class Diversion:
    """The diversion as the diverted-to user's signalling names it (History-Info, RFC 7044)."""

    served: str  # the diverting user (B)
    cdiv_as: str  # the CDIV AS that diverted the call

    @classmethod
    def of(cls, served: str, cdiv_as: str) -> Diversion:
        return cls(ids.canonical(served), as_identity(cdiv_as))

    def extensions(self) -> list[mikey.Payload]:
        return [
            mikey.GeneralExt(EXT_DIVERSION, self.served.encode()),
            mikey.GeneralExt(EXT_CDIV_AS, self.cdiv_as.encode()),
        ]


def as_identity(text: str) -> str:
    """An AS identity (a SIP URI, often without a user part: ``sip:cdiv-as.example.org``):
    compared as given, without surrounding spaces; 1..255 octets of UTF-8."""
    t = text.strip()
    if not t or len(t.encode()) > 255 or not t.lower().startswith(("sip:", "sips:")):
        raise MikeyError("mikey.malformed", "a CDIV AS identity is a SIP URI")
    return t


def _ext(msg: mikey.Message, ext_type: int) -> str | None:
    x = next((x for x in msg.all(mikey.GeneralExt) if x.ext_type == ext_type), None)
    if x is None:
        return None
    try:
        text = x.data.decode("utf-8")
        return as_identity(text) if ext_type == EXT_CDIV_AS else ids.canonical(text)
    except (UnicodeDecodeError, AgentError):
        raise MikeyError("mikey.malformed", "a diversion extension names no usable identity") from None


def confirmed(extensions: list[mikey.GeneralExt]) -> str | None:
    """The served user of a RESOLVE_RESP that confirms a diversion (solution #1), else None."""
    for x in extensions:
        if x.ext_type == EXT_DIVERSION:
            return ids.canonical(x.data.decode("utf-8", "replace"))
    return None


class Refusal(Exception):
    """The KMS refuses a resolve on diversion grounds (ERR ``err_no``)."""

    def __init__(self, reason: str, err_no: int = mikey.ERR_NOT_AUTHORIZED) -> None:
        super().__init__(reason)
        self.reason, self.err_no = reason, err_no


@dataclass
class DivertBook:
    """The KMS's diversion state: per ticket (its RAND), the identities it accepts besides the
    recipients, until the ticket's TRe; and the CDIV AS question (None: no AS to ask)."""

    ask: CdivQuestion | None = None
    diverts: int = 0
    questions: int = 0
    #: ticket RAND -> (TRe, {diverted-to user: the diverting user})
    _accepted: dict[bytes, tuple[float, dict[str, str]]] = field(default_factory=dict)

    def check(
        self,
        msg: mikey.Message,
        responder: str,
        recipients: list[str],
        ticket: mikey.Ticket,
        key: bytes,
        expiry: float,
        now: float,
    ) -> list[mikey.Payload]:
        """May ``responder`` resolve ``ticket`` (RESOLVE_INIT ``msg``)? The payloads to echo in
        RESOLVE_RESP; raises :class:`Refusal`."""
        for k in [k for k, (exp, _) in self._accepted.items() if exp <= now]:
            del self._accepted[k]
        in_policy = any(ids.matches(responder, ids.pattern(p)) for p in recipients)
        target = _ext(msg, EXT_DIVERT)
        if target is not None:  # the diverting user authorizes the diverted-to user
            if not in_policy:
                raise Refusal("only a recipient may divert the call")
            self._accepted.setdefault(key, (expiry, {}))[1][target] = responder
            self.diverts += 1
            return [mikey.GeneralExt(EXT_DIVERT, target.encode())]
        if in_policy:
            return []
        earlier = self._accepted.get(key, (0.0, {}))[1].get(responder)
        if earlier is not None:  # a diverted-to user accepted before: tell it whose call it is
            return announce(earlier)
        served, cdiv_as = _ext(msg, EXT_DIVERSION), _ext(msg, EXT_CDIV_AS)
        if served is None:
            raise Refusal("responder outside the ticket's recipients")
        if not any(ids.matches(served, ids.pattern(p)) for p in recipients):
            raise Refusal("the diverting user is not a recipient of the ticket")
        if cdiv_as is None or self.ask is None:
            raise Refusal("a diversion without a CDIV AS the KMS can ask")
        self.questions += 1
        answer = self.ask(cdiv_as, served, responder, ticket_ref(ticket.ticket_data))
        if answer is None:
            raise Refusal("the CDIV AS is not known to the KMS")
        if not answer:
            raise Refusal("the CDIV AS denies that the responder is the diverted-to user")
        self._accepted.setdefault(key, (expiry, {}))[1][responder] = served
        self.diverts += 1
        return Diversion(served, cdiv_as).extensions()


def announce(served: str | None) -> list[mikey.Payload]:
    """The diversion indication (the diverting user) a diverted-to user's TRANSFER_RESP carries,
    under its MAC (MPKr' is the diverted-to user's own: the KMS resolved for it), and the KMS's
    RESOLVE_RESP to a diverted-to user it accepted; empty when the call was not diverted."""
    return [] if served is None else [mikey.GeneralExt(EXT_DIVERSION, served.encode())]


def announced(transfer_resp: bytes) -> str | None:
    """The diverting user named in a TRANSFER_RESP (after it verified), else None."""
    try:
        return _ext(mikey.Message.decode(transfer_resp), EXT_DIVERSION)
    except AgentError:
        return None


# ---------------------------------------------------------------------------- solution #2


def diverted_error(transfer_init: bytes, own: str, served: str, now: float | None = None) -> bytes | None:
    """C's answer to a TRANSFER_INIT it may not resolve (RFC 6043 5.4 Error message): HDR, T,
    ERR 242, General Ext 241 (C, the diverted-to user), General Ext 248 (B, the diverting user).
    Unsigned: C holds no key of this ticket."""
    from ue_agent.kms import protect

    try:
        h, _ = mikey.Header.decode(mikey._Reader(bytes(transfer_init)))
    except MikeyError:
        return None
    hdr = mikey.Header(mikey.DT_ERROR, h.csb_id, h.prf_func, False, mikey.MAP_EMPTY)
    return mikey.Message(
        hdr,
        [
            protect.timestamp(now),
            mikey.Error(mikey.ERR_NOT_AUTHORIZED),
            mikey.GeneralExt(EXT_DIVERT, ids.canonical(own).encode()),
            mikey.GeneralExt(EXT_DIVERSION, ids.canonical(served).encode()),
        ],
    ).encode()


def diverted_to(answer: bytes, csb_id: int, requested: str) -> dict[str, str] | None:
    """The dedicated result of solution #2: ``{"diverted_to": C, "diverted_from": B}`` when
    ``answer`` is the Error message of :func:`diverted_error` for this offer (its CSB ID) naming
    someone other than the party called; None for any other message."""
    try:
        msg = mikey.Message.decode(answer)
    except MikeyError:
        return None
    if msg.header.data_type != mikey.DT_ERROR or msg.header.csb_id != csb_id:
        return None
    if mikey.ERR_NOT_AUTHORIZED not in [e.error_no for e in msg.all(mikey.Error)]:
        return None
    try:
        to = _ext(msg, EXT_DIVERT)
        served = _ext(msg, EXT_DIVERSION)
    except (AgentError, UnicodeDecodeError):
        return None
    if to is None or to == ids.canonical(requested):
        return None
    return {"diverted_to": to, "diverted_from": served or ids.canonical(requested)}
