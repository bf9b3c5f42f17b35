"""What the operation handlers share: the card worker, the network side, the media sessions.

One :class:`Context` per agent, built by :class:`ue_agent.agent.Agent` (the composition
root). Handlers take it, a typed request and the :class:`~ue_agent.api.core.Peer`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ue_agent.config import Config
from ue_agent.errors import AgentError
from ue_agent.handover.state import HandoverTracker
from ue_agent.media.sessions import SessionRegistry
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.card.pin import PinGate
    from ue_agent.card.results import CardIdentities
    from ue_agent.card_worker import CardWorker
    from ue_agent.media.sessions import MediaSession
    from ue_agent.media.store import KeyStore
    from ue_agent.network import NetworkSide

log = logging.getLogger("ue_agent.agent")
Emit = Callable[[str, dict[str, Any]], None]


class KeyRegistry:
    """Every Secret the agent holds, so shutdown can zeroize all of them and say so."""

    def __init__(self) -> None:
        self._keys: list[Secret] = []
        self._lock = threading.Lock()

    def add(self, *secrets: Secret | None) -> None:
        """Register ``secrets``; each key is held once, however often it is added (shutdown
        adds every key the agent holds, these included, and counts each one once)."""
        with self._lock:
            kept = [s for s in self._keys if not s.zeroized]
            have = {id(s) for s in kept}
            for s in secrets:
                if s is not None and id(s) not in have:
                    have.add(id(s))
                    kept.append(s)
            self._keys = kept

    def live(self) -> list[Secret]:
        with self._lock:
            return [s for s in self._keys if not s.zeroized]

    def zeroize_all(self) -> tuple[int, int]:
        """Zeroize every key; returns (how many were live, how many are still not zero)."""
        with self._lock:
            live = [s for s in self._keys if not s.zeroized]
            for s in live:
                s.zeroize()
            left = sum(1 for s in self._keys if not s.zeroized)
            self._keys.clear()
        return len(live), left


class Context:
    """The agent's state as the operations see it."""

    def __init__(self, cfg: Config, emit: Emit, card: CardWorker, network: NetworkSide) -> None:
        self.cfg = cfg
        self.emit = emit
        self.card = card
        self.network = network
        self.keys = KeyRegistry()
        #: every media session: id, owner, kind, phase, the offer's keys
        max_sessions, max_pending = cfg.limits.effective()
        self.sessions = SessionRegistry(
            max_pending=max_pending, max_sessions=max_sessions, offer_ttl=cfg.limits.offer_ttl_s
        )
        self.sessions.on_drop = self.drop_offer
        self.handover = HandoverTracker(self.sessions)
        self.identities: CardIdentities | None = None
        self.started = time.time()
        self.counters = {"authentications": 0, "mac_failures": 0, "sync_failures": 0}
        self.extra_status: list[Callable[[], dict[str, Any]]] = []
        self.pin: PinGate | None = None  # PIN1's last known state (ue_agent.card.pin)
        self._store: KeyStore | None = None  # made with the first media session (see store)
        #: (kms_url, capabilities on the wire), built on the first capabilities request
        self.caps: tuple[str | None, dict[str, Any]] | None = None

    def apply_limits(self) -> None:
        """[limits] (a reload may change them): sessions already open stay; new ones are
        refused until the counts are under the new limits."""
        max_sessions, max_pending = self.cfg.limits.effective()
        self.sessions.max_sessions, self.sessions.max_pending = max_sessions, max_pending
        self.sessions.offer_ttl = self.cfg.limits.offer_ttl_s
        if self._store is not None:
            self._store.max_sessions = max_sessions

    def drop_offer(self, s: MediaSession) -> None:
        """An offer dropped without an answer (``session.close``, its TTL, its connection
        gone): the SDES offer's keys and its early dialogs' keys are zeroized. (A MIKEY
        offer holds no key of its own: the ticket stays in the KMS client's cache.)"""
        from ue_agent.media.sdes import LocalOffer
        from ue_agent.ops.early import release

        if isinstance(s.offer, LocalOffer):
            s.offer.zeroize()
        s.offer = None
        release(self, list(s.early.values()))
        s.early = {}

    @property
    def store(self) -> KeyStore:
        """The media KeyStore. Built (and its modules imported) on first use, not at start-up:
        an agent that has negotiated no session has nothing in it."""
        if self._store is None:
            from ue_agent.media.store import KeyStore

            self._store = KeyStore(
                self.emit, on_withdrawn=self.sessions.withdrawn, max_sessions=self.sessions.max_sessions
            )
        return self._store

    @property
    def store_if_any(self) -> KeyStore | None:
        """The KeyStore if a session was ever negotiated (status must not build it)."""
        return self._store

    async def read_identities(self) -> None:
        try:
            self.identities = await self.card.call(lambda card: card.identities())
        except AgentError as exc:
            log.warning("card not ready: %s", exc.code)
            self.card.state = {"present": False, "error": exc.code}

    async def require_identities(self) -> CardIdentities | None:
        """The card's identities, read now if they are not known yet (None: no card)."""
        if self.identities is None:
            await self.read_identities()
        return self.identities
