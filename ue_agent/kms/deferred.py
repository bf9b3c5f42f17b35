"""Deferred delivery with MIKEY-TICKET (TR 33.828 requirement 52, clauses 4.2.4, 7.1.2, 7.1.3).

The receiver may be offline: the sender needs its keys when it offers, and the receiver
resolves the ticket later, from a TRANSFER_INIT a mailbox stored with the media.

- **One-way ticket** (RFC 6043 6.10): F clear (a TRANSFER_RESP SHALL NOT be sent), G clear
  (the responder SHALL NOT generate RANDRr), H set (RANDRi enters the TEK: "NOT G implies H"),
  I clear (no key forking: the TGK is not modified by a RESOLVE_RESP modifier), J clear (the
  ticket is not reused: a ticket lying in a mailbox opens one message only). The TEK and salt
  of every crypto session are then functions of the TGK, CS ID, CSB ID and RANDRi alone
  (5.1.3), so the initiator has them from REQUEST_RESP: :func:`sender_keys`.
- **One-way crypto sessions**: each SRTP stream is one crypto session (the initiator's SSRC);
  no empty session for the responder's direction, since nobody answers to fill it in (4.2.2.3).
- **Resolving later** (:func:`accept_stored`): RFC 6043 12.4 bounds a TRANSFER_INIT's age by the
  freshness window; a stored one is bounded by its ticket instead: T within [TRs - skew, TRe),
  not in the future beyond the skew, and the current time before TRe (the KMS also refuses
  after TRe: ERR 241). The replay cache stays in force and keeps the stored TRANSFER_INIT until
  TRe, so it is resolved once per receiver; its live form (``mikey.answer``) is refused as a
  replay too, and after the 300 s window anyway.

Sans-IO except :func:`offer_one_way` / :func:`resolve_stored`, which run the KMS exchanges
through a :class:`~ue_agent.kms.client.KmsClient` (its HTTP is injected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, session, streams

if TYPE_CHECKING:
    from ue_agent.kms.client import KmsClient

#: the one-way Ticket Policy asked for (RFC 6043 6.10): D E H N O; F, G, I, J clear
FLAGS_ONE_WAY = mikey.F_D | mikey.F_E | mikey.F_H | mikey.F_N | mikey.F_O
#: flags that would make the keys depend on something only a live responder provides
_LIVE = mikey.F_F | mikey.F_G | mikey.F_I


def is_one_way(flags: int) -> bool:
    """Keys from the ticket and the TRANSFER_INIT alone: no TRANSFER_RESP, no RANDRr, no forking."""
    return not flags & _LIVE


def _require_one_way(flags: int) -> None:
    if not is_one_way(flags):
        raise MikeyError(
            "mikey.unsupported",
            "the ticket needs a live responder (F, G or I flag set): it cannot be resolved later",
            reason="not_one_way",
            flags=mikey.flag_text(flags),
        )


def _cs_sessions(msg: mikey.Message) -> dict[int, tuple[int, int]]:
    return session._sessions({cs.cs_id: cs for cs in msg.header.cs_map if isinstance(cs, mikey.GenericCs)})


def sender_keys(pending: session.PendingOffer) -> list[streams.StreamKeyPair]:
    """The initiator's keys at offer time (RFC 6043 5.1.3 without RANDRr: G clear)."""
    issued = pending.issued
    _require_one_way(issued.flags)
    h = pending.message.header
    d = session._derivation(issued.tgk, issued.flags, pending.rand_i, None, h.prf_func, h.csb_id)
    return streams.keys_for(pending.plan, _cs_sessions(pending.message), d, initiator=True)


def sole_recipient(ticket: mikey.TicketPolicy, own: str) -> bool:
    """Whether the ticket names this party alone. Without key forking every responder the KMS
    resolves the ticket for receives MPKi and the TGK (RFC 6043 4.2.3.5), so any of them can
    write a TRANSFER_INIT under the ticket as the initiator could (5.3: group tickets): only a
    ticket for one recipient proves to that recipient that the initiator wrote it."""
    rs = [r.text for r in ticket.policy_all(mikey.IdRole, mikey.ROLE_R)]
    return len(rs) == 1 and "*" not in rs[0] and ids.canonical(rs[0]) == ids.canonical(own)


def sent_at(ti: session.TransferInit) -> float:
    t = ti.message.one(mikey.Timestamp)
    if t.ts_type not in (mikey.TS_NTP_UTC, mikey.TS_NTP, mikey.TS_NTP_UTC_32):
        raise MikeyError("mikey.unsupported", "timestamp type other than NTP", ts_type=t.ts_type)
    return protect.unix_of(t)


def check_stored_bounds(
    ti: session.TransferInit, resolved: session.ResolvedTicket, now: float, skew: float = 300.0
) -> float:
    """The bound of a stored TRANSFER_INIT: a one-way ticket, now before TRe, T within the
    ticket's validity (from TRs - skew) and not more than ``skew`` in the future; T as Unix time."""
    _require_one_way(resolved.flags)
    if now >= resolved.expiry:
        raise KmsError("kms.ticket_expired", "the ticket of the stored TRANSFER_INIT has expired")
    sent = sent_at(ti)
    if sent > now + skew:
        raise MikeyError("mikey.replay", "stored TRANSFER_INIT timestamp lies in the future")
    start = ti.ticket.policy_first(mikey.TimestampRole, mikey.TS_ROLE_START)
    if sent >= resolved.expiry or (start is not None and sent < protect.unix_of(start) - skew):
        raise KmsError("kms.ticket_expired", "the TRANSFER_INIT was sent outside its ticket's validity")
    return sent


def accept_stored(
    ti: session.TransferInit,
    resolved: session.ResolvedTicket,
    own: str,
    replay: session.ReplayCache,
    now: float,
    skew: float = 300.0,
) -> list[streams.StreamKeyPair]:
    """Verify a stored TRANSFER_INIT with its resolved ticket and give the receiver's keys.

    The bound is the ticket's validity, not the freshness window (module docstring); the
    RFC 6043 4.2.3.6 checks (MAC under MPKi, initiator = the ticket's) are those of
    :func:`session.accept_transfer_init`, run as of the moment the TRANSFER_INIT was sent."""
    sent = check_stored_bounds(ti, resolved, now, skew)
    replay.check(ti, now)
    _resp, keys = session.accept_transfer_init(ti, resolved, own, session.ReplayCache(replay.window), sent)
    replay.remember_until(ti, resolved.expiry, now)
    return keys


# ---------------------------------------------------------------------------- with a KmsClient


@dataclass(repr=False)
class OneWayOffer:
    """A TRANSFER_INIT for a receiver that may be offline, and the sender's keys already."""

    transfer_init: bytes
    keys: list[streams.StreamKeyPair]
    peer: str
    recipients: list[str]
    expiry: float
    message: mikey.Message = field(repr=False)

    def __repr__(self) -> str:
        return f"<OneWayOffer -> {self.peer} expiry={self.expiry:.0f}>"


@dataclass(repr=False)
class StoredResult:
    keys: list[streams.StreamKeyPair]
    peer_uri: str  # the initiator, as the KMS vouched for it
    expiry: float
    sent: float
    #: the ticket names this receiver alone, so only the initiator can have written the
    #: TRANSFER_INIT (:func:`sole_recipient`)
    peer_authenticated: bool = True

    def __repr__(self) -> str:
        return f"<StoredResult from {self.peer_uri}>"


async def offer_one_way(
    client: KmsClient,
    peer_uri: str,
    media: list[streams.Stream],
    *,
    recipients: list[str] | None = None,
    validity: int | None = None,
) -> OneWayOffer:
    """Ask the KMS for a one-way ticket and build the TRANSFER_INIT; the keys come with it."""
    peer = ids.canonical(peer_uri)
    pats = sorted({ids.pattern(r) for r in (recipients or [peer])})
    issued = await client._request_ticket(pats, False, validity or client.ticket_validity, FLAGS_ONE_WAY)
    try:
        if not is_one_way(issued.flags):
            raise KmsError(
                "kms.bad_response",
                "the KMS granted a ticket that needs a live responder",
                flags=mikey.flag_text(issued.flags),
            )
        pending = session.build_transfer_init(
            issued, client.own, peer, media, client.kms_fqdn, client.clock()
        )
        keys = sender_keys(pending)
    finally:
        issued.zeroize()  # J clear: never reused
    granted = [ids.pattern(r.text) for r in issued.ticket.policy_all(mikey.IdRole, mikey.ROLE_R)]
    return OneWayOffer(pending.transfer_init, keys, peer, granted or pats, issued.expiry, pending.message)


async def resolve_stored(client: KmsClient, transfer_init: bytes) -> StoredResult:
    """The receiver, later: resolve the ticket of a stored TRANSFER_INIT and derive the keys."""
    now = client.clock()
    ti = session.inspect_transfer_init(transfer_init)
    _require_one_way(ti.ticket.flags)
    client.replay.check(ti, now)  # before spending a KMS request on a replay
    resolved = await client._resolve(ti)
    try:
        keys = accept_stored(ti, resolved, client.own, client.replay, client.clock())
    finally:
        resolved.zeroize()  # J clear: not kept
    return StoredResult(
        keys, resolved.initiator, resolved.expiry, sent_at(ti), sole_recipient(ti.ticket, client.own)
    )
