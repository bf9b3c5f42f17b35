"""The agent: the composition root that wires the card worker, the network side, the media
sessions and the operation handlers together.

The card lives in ONE worker thread (:mod:`ue_agent.card_worker`); the GBA, NAF and KMS
clients are made on first use (:mod:`ue_agent.network`); each socket operation is
declared once, next to its handler, in :mod:`ue_agent.ops` and dispatched from
:data:`ue_agent.ops.registry.OPERATIONS`. Every key the agent holds or hands out is a
:class:`~ue_agent.secret.Secret`; :meth:`Agent.stop` zeroizes them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ue_agent.api.core import Peer, Request
from ue_agent.card.pin import PinGate
from ue_agent.card_worker import CardState, CardWorker, open_card
from ue_agent.config import Config
from ue_agent.errors import AgentError, CardError
from ue_agent.handover.state import HandoverReport
from ue_agent.media.sessions import Phase
from ue_agent.network import NetworkSide
from ue_agent.ops.context import Context, Emit
from ue_agent.pin_unlock import relock
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.card.results import CardIdentities
    from ue_agent.card.session import Card
    from ue_agent.drivers.netlink import AddressChange, LinkChange
    from ue_agent.media.sdes import LocalOffer
    from ue_agent.ops.declare import Op

log = logging.getLogger(__name__)

#: operation families that wait on the card only ([card] deadline_s); every other operation
#: that waits does so on the network ([network] deadline_s)
CARD_FAMILIES = frozenset({"ims"})
#: a renewal due sooner than this is not armed (a lifetime within the GBA client's margin)
RENEWAL_MIN_DELAY_S = 1.0


def _offer_keys(offer: LocalOffer) -> list[Secret]:
    return [s for st in offer.streams for k in st.keys.values() for s in (k.master_key, k.master_salt)]


class Agent:
    def __init__(self, cfg: Config, emit: Emit, opener: Callable[[], Card] | None = None) -> None:
        self._urc: Callable[[str], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set at start: the URC sink's and AT port's
        #: PIN1 across card (re)opens: status shows it, a refused PIN is never sent twice
        pin = PinGate(cfg.card.pin_credential, cfg.card.pin_allow_last_try)
        card = CardWorker(
            opener or (lambda: open_card(self.ctx.cfg, self._urc, pin, self._loop)), self._card_state
        )
        card.relock = lambda c: relock(c, pin)
        network = NetworkSide(lambda: self.ctx.cfg.network, card, self._identities, emit)
        self.ctx = Context(cfg, emit, card, network)
        self._ops: dict[str, Op[Any]] | None = None  # the declarations, loaded with the first request
        self.ctx.pin = pin
        self._identity_task: asyncio.Task[None] | None = None
        self._bootstrap_task: asyncio.Task[None] | None = None
        self._renewal: asyncio.TimerHandle | None = None
        network.on_bootstrapped = self._keep_bootstrapped

    # the pieces the daemon uses
    @property
    def cfg(self) -> Config:
        return self.ctx.cfg

    @property
    def card(self) -> CardWorker:
        return self.ctx.card

    @property
    def extra_status(self) -> list[Callable[[], dict[str, Any]]]:
        return self.ctx.extra_status

    async def _identities(self) -> CardIdentities | None:
        return await self.ctx.require_identities()

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from ue_agent.modem_reports import urc_sink

        self._loop = asyncio.get_running_loop()
        self._urc = urc_sink(self._loop, self.on_cireph)
        self.ctx.card.start()
        await self.ctx.read_identities()
        if self.ctx.identities is None:
            self._identity_task = asyncio.get_running_loop().create_task(self._await_card())

    async def _await_card(self) -> None:
        """No card at start (a reader or modem slower than the daemon, no card inserted yet):
        try again with a growing pause, so status names the card once it is there without a
        softphone operation having to ask first. Only while the identities are unknown."""
        pause = 0.5
        log.debug("card: no identities at start; trying again in the background")
        while self.ctx.identities is None:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)
            if self.ctx.identities is None and not self.ctx.card.busy:
                await self.ctx.read_identities()

    def bootstrap_at_start(self) -> None:
        """``[network] bootstrap = "at-start"``: bootstrap and derive the KMS's NAF key now, in
        the background (:meth:`ue_agent.network.NetworkSide.prepare`)."""
        if self._bootstrap_task is None:
            self._start_bootstrap("at start")

    def _start_bootstrap(self, when: str) -> None:
        """:meth:`_bootstrap` as the agent's one background bootstrap task."""
        self._bootstrap_task = asyncio.get_running_loop().create_task(self._bootstrap(when))

    def _cancel_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None

    async def _bootstrap(self, when: str) -> None:
        deadline = self.ctx.cfg.network.deadline_s
        try:
            async with asyncio.timeout(deadline):
                await self.ctx.network.prepare()
        except AgentError as exc:
            log.warning("bootstrap %s: %s; the next call bootstraps", when, exc.code)
        except TimeoutError:
            log.warning("bootstrap %s: no answer in %.0f s; the next call bootstraps", when, deadline)
        else:
            log.info("bootstrap %s: done; the next call goes straight to the KMS", when)

    def _keep_bootstrapped(self) -> None:
        """After each bootstrap (at start, by a call, or a renewal), with ``bootstrap =
        "at-start"``: the next one is due when the GBA client would stop using this one (its
        lifetime less the renewal margin), so that no call waits on the BSF or the card while
        the agent runs. A renewal that fails is logged; the next call then bootstraps, and
        that bootstrap arms the timer again."""
        self._cancel_renewal()
        due = self.ctx.network.renewal_due()
        if due is None or self.ctx.cfg.network.bootstrap != "at-start":
            return
        delay = due - time.time()
        if delay < RENEWAL_MIN_DELAY_S:  # a lifetime within the margin: renewing would loop
            log.info("bootstrap: its lifetime is within the renewal margin; not renewed ahead")
            return
        self._renewal = asyncio.get_running_loop().call_later(delay, self._renew)
        log.debug("bootstrap: renewal in %.0f s", delay)

    def _renew(self) -> None:
        self._renewal = None
        due = self.ctx.network.renewal_due()
        if self.ctx.cfg.network.bootstrap != "at-start" or due is None:
            return
        early = due - time.time()
        if early > 0:  # the wall clock (the lifetime's) and the timer's drifted apart: the rest
            self._renewal = asyncio.get_running_loop().call_later(early, self._renew)
            return
        task = self._bootstrap_task
        if task is None or task.done():  # the new bootstrap's event arms the next renewal
            self._start_bootstrap("renewal")

    def reconfigure(self, cfg: Config) -> None:
        self.ctx.cfg = cfg
        self.ctx.apply_limits()
        retired = self.ctx.network.reconfigure()  # [network] applies at once (ue_agent.network)
        keep = cfg.network.bootstrap == "at-start"
        if retired or not keep:  # the renewal's bootstrap is gone, or renewals are unwanted
            self._cancel_renewal()
        if retired and keep and cfg.network.kms_url:  # the new network's bootstrap, as at start
            if self._bootstrap_task is not None:
                self._bootstrap_task.cancel()  # one for the old network
            self._start_bootstrap("after reload")

    def held_keys(self) -> list[Secret]:
        """Every key the agent holds now, each once: the offers' SDES keys, the key store's
        (sessions and early dialogs), GBA's Ks and Ks_NAF, the KMS client's tickets (MPKs,
        TGKs, ours and resolved ones)."""
        ctx = self.ctx
        held: list[Secret] = []
        sessions = ctx.sessions.sessions()
        if any(s.kind == "sdes" and s.phase is Phase.OFFERED for s in sessions):
            from ue_agent.media.sdes import LocalOffer

            held += [k for s in sessions if isinstance(s.offer, LocalOffer) for k in _offer_keys(s.offer)]
        store = ctx.store_if_any
        if store is not None:
            held += store.secrets()
        held += ctx.network.secrets()
        held += ctx.keys.live()
        return list({id(k): k for k in held if not k.zeroized}.values())

    async def stop(self) -> tuple[int, int]:
        """Zeroize every key the agent holds (:meth:`held_keys`); returns (keys zeroized,
        keys left non-zero)."""
        ctx = self.ctx
        self._cancel_renewal()
        for task in (self._identity_task, self._bootstrap_task):
            if task is not None:
                task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, ctx.card.stop)
        held = self.held_keys()
        sessions = ctx.sessions.clear()
        ctx.keys.add(*held)
        zeroized, left = ctx.keys.zeroize_all()
        await ctx.network.close()
        for s in sessions:
            if s.phase is Phase.OFFERED:
                ctx.drop_offer(s)
        store = ctx.store_if_any
        if store is not None:
            store.zeroize_all()
        return zeroized, left + sum(1 for k in held if not k.zeroized)

    def connection_closed(self, peer: Peer) -> None:
        """A client connection closed: the offers it made die with it (nobody is left to
        complete them; their keys are zeroized)."""
        n = self.ctx.sessions.connection_closed(peer.conn)
        if n:
            log.info("conn %d closed: %d offer(s) waiting for an answer dropped", peer.conn, n)

    def holds_offers(self, peer: Peer) -> bool:
        """The connection made offers still waiting for their answer (not evicted for room)."""
        return self.ctx.sessions.has_offers(peer.conn)

    def _card_state(self, state: CardState) -> None:
        body = {"present": state["present"], "error": state.get("error")}
        if state.get("reset"):
            body.update(reset=True, resets=state.get("resets"))
        self.ctx.emit("card", body)

    # -- handover inputs ------------------------------------------------------------------------
    def on_cireph(self, value: int) -> None:
        """A ``+CIREPH: <srvcch>`` URC from the modem."""
        self._apply(self.ctx.handover.on_cireph(value))

    def on_net_event(self, ev: LinkChange | AddressChange) -> None:
        """A LinkChange / AddressChange from the netlink monitor."""
        from ue_agent.drivers.netlink import AddressChange

        if isinstance(ev, AddressChange):
            what = "address_added" if ev.added else "address_removed"
        else:
            what = "link_up" if ev.up else "link_down"
        self._apply(self.ctx.handover.on_ip_change(ev.ifname, what))

    def _apply(self, report: HandoverReport) -> None:
        from ue_agent.ops.session import moved_to_cs

        for d in report.decisions:
            if d.release_keys:  # SRVCC done: the session's keys are zeroized
                self.ctx.store.release(d.key)
            elif d.release_media:  # only its voice/video streams went to CS
                self.ctx.store.release_media(d.key, d.release_media)
        self.ctx.emit("handover", report.event)
        moved_to_cs(self.ctx, report.decisions)

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, req: Request, peer: Peer) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Run one request (the API server's handler).

        Operations that only touch memory (status, capabilities, SDES, session.*) are plain
        functions and return their result at once; those that wait for the card or the
        network are coroutines, returned for the server to run as a task.
        """
        ops = self._ops
        if ops is None:
            from ue_agent.ops.registry import OPERATIONS

            ops = self._ops = OPERATIONS
        op = ops.get(req.op)
        if op is None or op.handler is None:
            raise AgentError("agent.unavailable", f"{req.op} is not available in this build")
        result = op.handler(self.ctx, req.params, peer)
        if isinstance(result, dict):
            return result
        return self._bounded(op.family in CARD_FAMILIES, result)

    async def _bounded(self, card_only: bool, pending: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """An operation that waits (card, network) within its deadline: ``[card] deadline_s``
        for the card only, ``[network] deadline_s`` otherwise. At the deadline the wait is
        cancelled (a card job or a shared bootstrap already started runs on for others) and
        the operation fails with ``card.timeout``, ``gba.bsf_unreachable`` or
        ``kms.unreachable``."""
        cfg = self.ctx.cfg
        limit = cfg.card.deadline_s if card_only else cfg.network.deadline_s
        try:
            async with asyncio.timeout(limit):
                return await pending
        except TimeoutError:
            if card_only:
                raise CardError(
                    "card.timeout", f"no answer from the card within {limit:g} s (deadline)"
                ) from None
            raise self.ctx.network.deadline_error(limit) from None
