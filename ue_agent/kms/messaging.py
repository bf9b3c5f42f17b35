"""IMS messaging with MIKEY-TICKET keys (TR 33.829 clause 8): a pager-mode MESSAGE body
(RFC 3428) protected end to end for one or several recipients, one way, from the ticket.

A MESSAGE gets no answer that could carry a TRANSFER_RESP, and its recipients may read it
later, so the key comes from a one-way ticket (:mod:`ue_agent.kms.deferred`: RFC 6043 6.10
F, G, I, J clear) whose Ticket Policy names every recipient (6.10: "IDRr ... a responder or a
group of responders"): each of them, and nobody else, can resolve it at the KMS and derive
the same key; the sender derives it at once. The choices below are this project's (TR 33.829
clause 8 and its annexes describe the profile; the text's exact encoding is not available
here), written in docs/kms.md "IMS messaging":

- the TRANSFER_INIT has one crypto session (GENERIC-ID, CS ID 1) of prot type
  :data:`PROT_MIME` (private use, RFC 3830 6.10 / IANA 241-255) whose session data is the
  protected body's Content-Type, and an SP of that prot type naming the AEAD algorithm by its
  RFC 5116 number (1 AEAD_AES_128_GCM, 2 AEAD_AES_256_GCM: the ticket PRF's key length, 12.1);
- body key = TEK of that CS, nonce = the first 12 octets of its salting key (RFC 6043 5.1.3
  with RANDRi, no RANDRr); a fresh CSB ID, RANDRi and ticket per MESSAGE make each key used
  for one body only; associated data = the TRANSFER_INIT as sent (the body is bound to its
  sender, recipients, content type and e2m indication);
- the e2m indication (end-to-middle: the protection ends at a network messaging server, "the
  middle", which may resolve the ticket and read the body): a General Extension payload of
  private-use type :data:`EXT_E2M` carrying the middle's identity, under the TRANSFER_INIT's
  MAC; the middle is then one of the ticket's recipients. Without it the message is e2e.
- bounds on the receiving side are those of a stored TRANSFER_INIT (the network may deliver a
  MESSAGE later): the ticket's validity, and the replay cache keeps it until TRe (once per
  receiver, :func:`ue_agent.kms.deferred.check_stored_bounds`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ue_agent.crypto import mikey_prf
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import deferred, ids, mikey, protect, session
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.kms.client import KmsClient

PROT_MIME = 250  # private use prot type (this project): a protected MIME body
EXT_E2M = 250  # private use General Ext type (this project): the e2m indication, data = the middle
MESSAGE_CS = 1
SP_AEAD_ALG = 0  # SP parameter of PROT_MIME: the AEAD algorithm (RFC 5116 6 numbering)
SP_KEY_LEN = 1
AEAD_AES_128_GCM = 1
AEAD_AES_256_GCM = 2
_AEAD_KEY_LEN = {AEAD_AES_128_GCM: 16, AEAD_AES_256_GCM: 32}
NONCE_LEN = 12
MAX_CONTENT_TYPE = 255


@dataclass
class MessageInit:
    """A received message TRANSFER_INIT, parsed and checked, not yet verified."""

    ti: session.TransferInit  # for the KMS resolve and the replay cache
    content_type: str
    aead: int
    e2m: str | None  # the middle named by the e2m indication (canonical), None for e2e

    @property
    def recipients(self) -> list[str]:
        return [r.text for r in self.ti.ticket.policy_all(mikey.IdRole, mikey.ROLE_R)]


def _aead_for(prf_func: int) -> int:
    return AEAD_AES_256_GCM if protect.family(prf_func).key_len == 32 else AEAD_AES_128_GCM


def _body_key(tgk: Secret, rand_i: bytes, prf_func: int, aead: int) -> tuple[Secret, bytes]:
    """(TEK, nonce) of the message CS (RFC 6043 5.1.3; RANDRi only: H set, G clear)."""
    tek = mikey_prf.from_tgk(
        tgk.reveal(), mikey_prf.TEK_CONST, MESSAGE_CS, rand_i, None, _AEAD_KEY_LEN[aead], prf_func
    )
    salt = mikey_prf.from_tgk(
        tgk.reveal(), mikey_prf.SALT_CONST, MESSAGE_CS, rand_i, None, NONCE_LEN, prf_func
    )
    return Secret(tek, "message-key"), salt


def _content_type(text: str) -> bytes:
    raw = text.strip().encode("ascii", "replace")
    if not raw or len(raw) > MAX_CONTENT_TYPE or b"\r" in raw or b"\n" in raw:
        raise MikeyError("mikey.malformed", "Content-Type must be 1..255 printable ASCII octets")
    return raw


def seal(
    issued: session.IssuedTicket,
    own: str,
    recipients: list[str],
    body: bytes,
    content_type: str,
    *,
    e2m: str | None = None,
    now: float | None = None,
) -> tuple[bytes, bytes]:
    """(TRANSFER_INIT, protected body) for a MESSAGE to ``recipients`` under a one-way ticket."""
    if not deferred.is_one_way(issued.flags):
        raise KmsError(
            "kms.bad_response", "a message needs a one-way ticket", flags=mikey.flag_text(issued.flags)
        )
    if not recipients:
        raise KmsError("kms.bad_request", "a message needs at least one recipient")
    now = time.time() if now is None else now
    if now >= issued.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired; request a new one")
    prf = issued.prf_func
    aead = _aead_for(prf)
    cs = mikey.GenericCs(MESSAGE_CS, PROT_MIME, (0,), _content_type(content_type), issued.tgk_spi)
    sp = mikey.SecurityPolicy(
        0, PROT_MIME, ((SP_AEAD_ALG, bytes([aead])), (SP_KEY_LEN, bytes([_AEAD_KEY_LEN[aead]])))
    )
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT, int.from_bytes(os.urandom(4), "big"), prf, False, mikey.MAP_GENERIC_ID, (cs,)
    )
    rand_i = os.urandom(protect.RAND_LEN)
    own_c, first = ids.canonical(own), ids.canonical(recipients[0])
    t = issued.ticket
    payloads: list[mikey.Payload] = [
        protect.timestamp(now),
        mikey.RandRole(mikey.RAND_ROLE_I, rand_i),
        mikey.IdRole(mikey.ROLE_I, mikey.ID_URI, own_c.encode()),
        mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, first.encode()),
        sp,
        mikey.Ticket(
            t.ticket_type, t.subtype, t.version, t.prf_func, t.flags, t.tp_data, t.reserved, t.ticket_data
        ),
    ]
    if e2m is not None:
        payloads.append(mikey.GeneralExt(EXT_E2M, ids.canonical(e2m).encode()))
    keys = protect.MessageKeys.derive(issued.mpk_i, hdr.csb_id, mikey_prf.DIR_INITIAL, rand_i, None, prf)
    try:
        raw = protect.sign(mikey.Message(hdr, payloads), keys, own_c.encode() + first.encode())
    finally:
        keys.zeroize()
    tek, nonce = _body_key(issued.tgk, rand_i, prf, aead)
    try:
        sealed = AESGCM(tek.reveal()).encrypt(nonce, bytes(body), raw)
    finally:
        tek.zeroize()
    return raw, sealed


def inspect(raw: bytes) -> MessageInit:
    """Parse a message TRANSFER_INIT (before any KMS request)."""
    msg, ticket = session.decode_transfer_init(raw)
    if not deferred.is_one_way(ticket.flags):
        raise MikeyError("mikey.unsupported", "a message's ticket must be one-way", reason="not_one_way")
    css = [cs for cs in msg.header.cs_map if isinstance(cs, mikey.GenericCs)]
    if msg.header.cs_map_type != mikey.MAP_GENERIC_ID or len(css) != 1 or css[0].prot_type != PROT_MIME:
        raise MikeyError("mikey.unsupported", "not a message TRANSFER_INIT (one MIME crypto session)")
    cs = css[0]
    sps = [
        sp
        for sp in msg.all(mikey.SecurityPolicy)
        if sp.policy_no in cs.policies and sp.prot_type == PROT_MIME
    ]
    alg = sps[0].param(SP_AEAD_ALG) if sps else None
    if alg is None or len(alg) != 1 or alg[0] != _aead_for(msg.header.prf_func):
        raise MikeyError("mikey.unsupported", "message AEAD algorithm", param=SP_AEAD_ALG)
    try:
        ctype = cs.session_data.decode("ascii")
    except UnicodeDecodeError:
        raise MikeyError("mikey.malformed", "Content-Type is not ASCII") from None
    exts = [x for x in msg.all(mikey.GeneralExt) if x.ext_type == EXT_E2M]
    if len(exts) > 1:
        raise MikeyError("mikey.malformed", "more than one e2m indication")
    e2m = ids.canonical(exts[0].data.decode("utf-8", "replace")) if exts else None
    ti = session.transfer_init_of(raw, msg, ticket, [])
    return MessageInit(ti, ctype, alg[0], e2m)


def open_body(
    mi: MessageInit,
    resolved: session.ResolvedTicket,
    own: str,
    body: bytes,
    replay: session.ReplayCache,
    now: float,
) -> bytes:
    """Verify the TRANSFER_INIT (RFC 6043 4.2.3.6: MAC under MPKi, initiator = the ticket's) and
    decrypt the body; the message is remembered until TRe (read once per receiver)."""
    ti = mi.ti
    deferred.check_stored_bounds(ti, resolved, now)
    replay.check(ti, now)
    session.verify_initiator(ti, resolved, own)
    h = ti.message.header
    tek, nonce = _body_key(resolved.tgk, ti.rand_i, h.prf_func, mi.aead)
    try:
        plain = AESGCM(tek.reveal()).decrypt(nonce, bytes(body), ti.raw)
    except InvalidTag:
        raise MikeyError("mikey.bad_mac", "the message body does not verify under its key") from None
    finally:
        tek.zeroize()
    replay.remember_until(ti, resolved.expiry, now)
    return plain


# ---------------------------------------------------------------------------- with a KmsClient


@dataclass(repr=False)
class SealedMessage:
    transfer_init: bytes
    body: bytes
    recipients: list[str]  # the ticket's (the middle included with e2m)
    expiry: float

    def __repr__(self) -> str:
        return f"<SealedMessage to {len(self.recipients)} recipients>"


@dataclass(repr=False)
class OpenedMessage:
    body: bytes
    content_type: str
    sender: str  # the ticket's initiator, as the KMS vouched for it
    e2m: str | None
    recipients: list[str]
    sent: float
    #: only the sender can have written it: the ticket names this receiver alone. With several
    #: recipients (or e2m) each of them holds MPKi and the TGK (no forking) and could write a
    #: message under the ticket "from" the sender (deferred.sole_recipient)
    sender_authenticated: bool = False

    def __repr__(self) -> str:
        return f"<OpenedMessage from {self.sender} {self.content_type}>"


async def protect_message(
    client: KmsClient,
    recipients: list[str],
    body: bytes,
    content_type: str = "text/plain",
    *,
    e2m: str | None = None,
    validity: int | None = None,
) -> SealedMessage:
    """A one-way ticket for the recipients (and the middle, with e2m), the TRANSFER_INIT and the body."""
    if not recipients:
        raise KmsError("kms.bad_request", "a message needs at least one recipient")
    canon = [ids.canonical(r) for r in recipients]
    pats = sorted({*canon, *([ids.canonical(e2m)] if e2m else [])})
    issued = await client._request_ticket(
        pats, False, validity or client.ticket_validity, deferred.FLAGS_ONE_WAY
    )
    try:
        raw, sealed = seal(issued, client.own, canon, body, content_type, e2m=e2m, now=client.clock())
    finally:
        issued.zeroize()  # J clear: one ticket per message
    granted = [r.text for r in issued.ticket.policy_all(mikey.IdRole, mikey.ROLE_R)]
    return SealedMessage(raw, sealed, granted, issued.expiry)


async def unprotect_message(client: KmsClient, transfer_init: bytes, body: bytes) -> OpenedMessage:
    """Resolve the message's ticket (as one of its recipients) and decrypt the body."""
    mi = inspect(transfer_init)
    client.replay.check(mi.ti, client.clock())  # before a KMS request
    resolved = await client._resolve(mi.ti)
    try:
        plain = open_body(mi, resolved, client.own, body, client.replay, client.clock())
    finally:
        resolved.zeroize()
    return OpenedMessage(
        plain,
        mi.content_type,
        resolved.initiator,
        mi.e2m,
        mi.recipients,
        deferred.sent_at(mi.ti),
        deferred.sole_recipient(mi.ti.ticket, client.own),
    )
