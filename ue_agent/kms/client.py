"""The UE's KMS client: MIKEY-TICKET over GBA-authenticated HTTP (Ua, TS 33.328) and the ticket transfer.

The KMS is a NAF (Ua protocol id 01 00 00 00 06). Ticket Request and Ticket Resolve go as
``POST <kms_url>/mikey`` with ``Content-Type: application/mikey`` through :class:`NafClient`
(HTTP Digest with B-TID / Ks_NAF); the MIKEY messages themselves are protected with
transport keys derived from the same Ks_NAF, named by its B-TID in IDRpsk (docs/kms.md).

The decisions live in :mod:`ue_agent.kms.session`; this module adds the HTTP calls, the
ticket caches (initiator: per peer; responder: per ticket) and the replay cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ue_agent.crypto.mikey_prf import PRF_HMAC_SHA_256
from ue_agent.errors import GbaError, KmsError
from ue_agent.kms import anonymity, conference, divert, ids, mikey, session, ts33328
from ue_agent.kms.streams import SrtpStream, Stream, StreamKeyPair, TlsStream
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.gba.client import GbaClient
    from ue_agent.gba.naf_client import NafClient

log = logging.getLogger(__name__)

CONTENT_TYPE = ts33328.CONTENT_TYPE
KMS_PATH = ts33328.HTTP_PATH
UA_KMS = ts33328.UA_PROTOCOL_ID
REUSE_MARGIN_S = 30.0  # do not start a session on a ticket this close to its expiry

__all__ = ["AnswerResult", "KmsClient", "OfferResult", "SrtpStream", "StreamKeyPair", "TlsStream"]


@dataclass
class OfferResult:
    transfer_init: bytes
    pending: session.PendingOffer
    reused_ticket: bool = False


@dataclass
class AnswerResult:
    transfer_resp: bytes | None  # None when the ticket's F flag is clear (RFC 6043 6.10)
    keys: list[StreamKeyPair]
    peer_uri: str  # the initiator, as the KMS vouched for it
    resolved_now: bool = True  # False when the ticket came from the cache
    group: conference.Link | None = None  # a focus's group keys (dial-out, kms/conference.py)
    #: the initiator withheld its identity (peer_uri is the anonymous URI, kms/anonymity.py) and
    #: whether the KMS vouched that it authenticated it
    anonymous: bool = False
    vouched: bool = True
    #: the served user whose call was diverted to us, as the KMS confirmed it (kms/divert.py)
    diverted_from: str | None = None


class KmsClient:
    def __init__(
        self,
        naf: NafClient,
        kms_url: str,
        kms_fqdn: str,
        own_uri: str,
        *,
        gba: GbaClient | None = None,
        clock: Callable[[], float] = time.time,
        prf_func: int = PRF_HMAC_SHA_256,
        ticket_validity: int = 3600,
        replay_window: float = 300.0,
    ) -> None:
        self.naf = naf
        self.gba = gba if gba is not None else naf.gba
        self.url = kms_url.rstrip("/") + KMS_PATH
        self.kms_fqdn = kms_fqdn  # as given: it enters Ks_NAF (TS 33.220 B.3)
        self.own = ids.canonical(own_uri)
        self.clock = clock
        self.prf_func = prf_func
        self.ticket_validity = ticket_validity
        self.replay = session.ReplayCache(replay_window)
        self.kms_requests = 0
        self._issued: dict[tuple[str, tuple[str, ...], bool, int, bool], session.IssuedTicket] = {}
        self._resolved: dict[bytes, session.ResolvedTicket] = {}

    # -- initiator

    async def offer(
        self,
        peer_uri: str,
        streams: list[Stream],
        *,
        recipients: list[str] | None = None,
        group: bool = False,
        validity: int | None = None,
        focus: bool = False,
        anonymous: bool = False,
    ) -> OfferResult:
        """A TRANSFER_INIT for ``peer_uri`` (reusing a live ticket for the same peer and policy).
        ``focus``: the peer is a conference focus, which may choose the keys (M flag, RFC 6043 6.10).
        ``anonymous``: a ticket and TRANSFER_INIT naming the anonymous URI, not us (kms/anonymity.py)."""
        peer = ids.canonical(peer_uri)
        pats = tuple(sorted(ids.pattern(r) for r in (recipients or [peer])))
        extra = mikey.F_M if focus else 0
        key = (peer, pats, group, extra, anonymous)
        now = self.clock()
        self.prune(now)
        issued = self._issued.get(key)
        # RFC 6043 5.3 / 6.10: a ticket whose policy forbids reuse (J flag clear) is used once
        reused = issued is not None and issued.expiry - now > REUSE_MARGIN_S and issued.ticket.flag(mikey.F_J)
        if not reused:
            if issued is not None:
                issued.zeroize()
            flags = ((session.FLAGS_GROUP if group else session.FLAGS_FORKED) | extra) if extra else None
            issued = await self._request_ticket(
                list(pats),
                group,
                validity or self.ticket_validity,
                flags,
                extra=[anonymity.request()] if anonymous else [],
            )
            if anonymous and not anonymity.is_anonymous(session.ticket_initiator(issued.ticket)):
                issued.zeroize()  # the KMS named us in the ticket: do not send it
                raise KmsError("kms.anonymity_refused", "the KMS did not grant an anonymous ticket")
            self._issued[key] = issued
        assert issued is not None
        own = anonymity.ANONYMOUS_URI if anonymous else self.own
        pending = session.build_transfer_init(issued, own, peer, streams, self.kms_fqdn, now)
        return OfferResult(pending.transfer_init, pending, reused)

    def complete(self, pending: session.PendingOffer, transfer_resp: bytes) -> list[StreamKeyPair]:
        """Verify the peer's TRANSFER_RESP; the same keys the peer derived (one call per fork)."""
        return self.complete_with_peer(pending, transfer_resp)[0]

    def complete_with_peer(
        self, pending: session.PendingOffer, transfer_resp: bytes
    ) -> tuple[list[StreamKeyPair], str, bool]:
        """As :meth:`complete`, with the responder (IDRr) and whether the KMS vouches for it:
        with key forking (I flag, RFC 6043 5.1.1) MPKr' is derived from IDRr, so only the
        party the KMS resolved the ticket for can answer under that identity."""
        responder, keys = session.complete(pending, transfer_resp, self.clock())
        log.info("MIKEY-TICKET session %s -> %s keyed", self.own, responder)
        return keys, responder, bool(pending.issued.flags & mikey.F_I)

    # -- responder

    async def answer(
        self, transfer_init: bytes, *, diversion: divert.Diversion | None = None
    ) -> AnswerResult:
        """Resolve the ticket of a TRANSFER_INIT (or reuse a resolved one) and answer it.
        ``diversion``: the call was diverted to us; the KMS asks the CDIV AS (TR 33.829 9.2)."""
        now = self.clock()
        self.prune(now)
        ti = session.inspect_transfer_init(transfer_init)
        self.replay.check(ti, now)  # before spending a KMS request on a replay
        resolved = self._resolved.get(ti.ticket_ref)
        fresh = resolved is None or resolved.expiry <= now
        if fresh:
            resolved = await self._resolve(ti, diversion.extensions() if diversion is not None else [])
        assert resolved is not None
        served = divert.confirmed(resolved.extensions)  # a call diverted to us, as the KMS accepted it
        resp, keys = session.accept_transfer_init(
            ti, resolved, self.own, self.replay, self.clock(), extra=divert.announce(served)
        )
        group = conference.member_after_answer(ti, resolved, self.own, resp, keys)  # None: no focus keys
        if fresh and resolved.flags & mikey.F_J:  # kept for reuse only when the policy allows it (5.3)
            self._resolved[ti.ticket_ref] = resolved
        elif fresh:
            resolved.zeroize()
        anonymous = anonymity.is_anonymous(resolved.initiator)
        return AnswerResult(
            resp,
            keys,
            resolved.initiator,
            fresh,
            group,
            anonymous=anonymous,
            vouched=anonymity.vouched(resolved.extensions) if anonymous else True,
            diverted_from=served,
        )

    async def authorize_divert(self, transfer_init: bytes, new_recipient: str) -> None:
        """As the called party, let the KMS accept ``new_recipient`` for this ticket (TR 33.829 9.3.2)."""
        ti = session.inspect_transfer_init(transfer_init)
        target = ids.canonical(new_recipient)

        def build(btid: str, psk: Secret):
            return session.build_resolve_init(
                self.own,
                ti,
                btid,
                psk,
                self.kms_fqdn,
                divert_to=target,
                now=self.clock(),
            )

        (await self._exchange(build, session.read_resolve_resp)).zeroize()  # an authorization only

    def forget(self, peer_uri: str | None = None) -> None:
        """Drop cached tickets (all, or those for one peer) and zeroize their keys."""
        peer = ids.canonical(peer_uri) if peer_uri else None
        for k in [k for k in self._issued if peer is None or k[0] == peer]:
            self._issued.pop(k).zeroize()
        if peer is None:
            for r in self._resolved.values():
                r.zeroize()
            self._resolved.clear()

    # -- KMS exchanges

    async def _request_ticket(
        self,
        recipients: list[str],
        group: bool,
        validity: int,
        flags: int | None = None,
        extra: list[mikey.Payload] | None = None,
    ) -> session.IssuedTicket:
        def build(btid: str, psk: Secret):
            return session.build_request_init(
                self.own,
                recipients,
                btid,
                psk,
                self.kms_fqdn,
                validity=validity,
                group=group,
                now=self.clock(),
                prf_func=self.prf_func,
                extra=extra or (),
                flags=flags,
            )

        return await self._exchange(build, session.read_request_resp)

    async def _resolve(
        self, ti: session.TransferInit, extra: list[mikey.Payload] | None = None
    ) -> session.ResolvedTicket:
        def build(btid: str, psk: Secret):
            return session.build_resolve_init(
                self.own, ti, btid, psk, self.kms_fqdn, now=self.clock(), extra=extra or ()
            )

        return await self._exchange(build, session.read_resolve_resp)

    async def prepare(self) -> str:
        """Bootstrap if needed and derive this KMS's Ks_(ext_)NAF now, ahead of the first
        exchange (``[network] bootstrap = "at-start"``); the B-TID. The key stays cached in the
        GBA client (this copy is zeroized here)."""
        btid, psk = await self.gba.ks_naf(self.kms_fqdn, UA_KMS)
        psk.zeroize()
        return btid

    def _challenge(self) -> asyncio.Future[bool] | None:
        """The KMS's challenge on its way, when none is cached (see :meth:`_exchange`)."""
        if self.naf.knows(self.kms_fqdn):
            return None
        return asyncio.ensure_future(self.naf.challenge("POST", self.url, self.kms_fqdn))

    async def _exchange(self, build, read):
        """One KMS round trip; retried once when the KMS did not accept our Ks_NAF (new B-TID).

        A request to a NAF whose challenge is not known is answered ``401`` whatever it
        carries (TS 24.109 B.3 steps 1-2), and ours cannot be built before the key. So when
        no challenge is cached, it is fetched (:meth:`NafClient.challenge`) while the key is
        made (a GBA bootstrap on a first call: the BSF's round trips and the card) and the
        request built, and the request then goes out answered: the KMS's challenge round
        trip and its connection set-up are off the call's path."""
        for attempt in (1, 2):
            challenge = self._challenge()
            try:
                btid, psk = await self.gba.ks_naf(self.kms_fqdn, UA_KMS)
                try:
                    sent = build(btid, psk)
                    if challenge is not None:
                        await challenge
                    self.kms_requests += 1
                    resp = await self.naf.request(
                        "POST", self.url, sent.raw, CONTENT_TYPE, self.kms_fqdn, UA_KMS
                    )
                    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                    if resp.status in (502, 503, 504) and ctype != CONTENT_TYPE:
                        raise KmsError("kms.unreachable", f"the KMS is unavailable (HTTP {resp.status})")
                    if ctype != CONTENT_TYPE:
                        raise KmsError(
                            "kms.bad_response",
                            f"KMS answered HTTP {resp.status} with {ctype or 'no'} content",
                        )
                    try:
                        return read(resp.status, resp.body, sent, psk, self.kms_fqdn)
                    except KmsError as e:
                        if attempt == 1 and e.details.get("kms_error") == mikey.ERR_AUTH_FAILURE:
                            log.info("KMS did not accept the Ks_NAF of %s: retrying once", btid)
                            continue
                        raise
                finally:
                    psk.zeroize()
            except GbaError as e:
                if e.code == "gba.naf_unreachable":
                    raise KmsError("kms.unreachable", "the KMS cannot be reached", url=self.url) from None
                raise
            finally:
                if challenge is not None:
                    _settle(challenge)
        raise KmsError(
            "kms.ticket_rejected", "the KMS could not authenticate the request"
        )  # pragma: no cover

    def prune(self, now: float | None = None) -> int:
        """Drop (and zeroize) the cached tickets that expired, ours (per peer) and the
        resolved ones (per ticket); how many. Run before each offer and answer, so the
        caches hold live tickets only, however many peers were called."""
        now = self.clock() if now is None else now
        gone = 0
        for k in [k for k, t in self._issued.items() if t.expiry <= now]:
            self._issued.pop(k).zeroize()
            gone += 1
        for ref in [r for r, t in self._resolved.items() if t.expiry <= now]:
            self._resolved.pop(ref).zeroize()
            gone += 1
        return gone

    def secrets(self) -> list[Secret]:
        """The cached tickets' keys (MPKi, MPKr, TGK: ours per peer and resolved ones)."""
        tickets: list[session.IssuedTicket | session.ResolvedTicket] = [
            *self._issued.values(),
            *self._resolved.values(),
        ]
        return [k for t in tickets for k in (t.mpk_i, t.mpk_r, t.tgk) if k is not None]

    @property
    def cached_tickets(self) -> int:
        """Tickets held (ours per peer, and resolved ones)."""
        return len(self._issued) + len(self._resolved)


def _settle(task: asyncio.Future[bool]) -> None:
    """A challenge fetch the exchange no longer waits for: stopped, or its outcome taken (an
    error of the key or of the request is the one reported)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()
