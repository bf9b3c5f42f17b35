"""The card worker: ONE thread owns the card; every card access is a job on its queue.

Jobs run one at a time. A job asked for while another runs is refused with ``card.busy``
at once (oFono's explicit Busy), so no request waits behind a slow card. A transport
failure closes the card; the next job opens it again.

Resets (issue 9): when the transport signals one (a modem's RDY), the worker runs
``card.check()`` at once, between requests, so the ISIM's channel is back before the next
one; every reset the card layer notices is announced with a ``card`` event
(``reset: true``) and counted in status. Stopping closes the card's logical channel;
opening reclaims channels a killed predecessor left (:mod:`ue_agent.channel_record`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ue_agent.config import Config
from ue_agent.errors import AgentError, CardError

if TYPE_CHECKING:
    from ue_agent.card.pin import PinGate
    from ue_agent.card.results import AkaMacFailure, AkaOutcome, AkaSyncFailure, GbaBootstrapRes
    from ue_agent.card.session import Card
    from ue_agent.secret import Secret

log = logging.getLogger("ue_agent.agent")
T = TypeVar("T")

#: transport failures after which the card is re-opened on the next job.
REOPEN_CODES = frozenset(
    {"card.absent", "card.removed", "card.reader_gone", "card.pcsc_unavailable", "modem.gone"}
)

#: the card's presence as ``status`` and the ``card`` event show it
CardState = dict[str, Any]
Job = Callable[["Card"], Any]


class CardWorker:
    """One thread owns the card; jobs are functions of the Card run there, one at a time."""

    def __init__(self, opener: Callable[[], Card], on_state: Callable[[CardState], None]) -> None:
        self._opener = opener
        self._on_state = on_state
        self._jobs: list[tuple[Job, asyncio.Future[Any]]] = []
        self._cv = threading.Condition()
        self._busy = False
        self._stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="ue-agent-card", daemon=True)
        self.card: Card | None = None
        self.state: CardState = {"present": False, "error": None}
        #: card resets noticed since the start (over every Card opened)
        self.resets = 0
        self._card_resets = 0  # resets the current Card had counted at the last look
        self._check_queued = False
        #: gives PIN1 again when the card asks for it (6982) after a reset; True when it did
        self.relock: Callable[[Card], bool] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy

    async def call(self, job: Callable[[Card], T]) -> T:
        if self._busy:
            raise CardError("card.busy", "the card is serving another request; retry")
        if self._stop:
            raise CardError("card.closed", "the agent is stopping")
        assert self._loop is not None, "CardWorker.start() first"
        self._busy = True
        fut: asyncio.Future[T] = self._loop.create_future()
        with self._cv:
            self._jobs.append((job, fut))
            self._cv.notify()
        return await fut

    def stop(self, timeout: float = 5.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- worker thread ----------------------------------------------------------------------
    def _main(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._check_queued and not self._stop:
                    self._cv.wait()
                if self._stop:
                    pending, self._jobs = self._jobs, []
                    break
                check, self._check_queued = self._check_queued, False
                job, fut = self._jobs.pop(0) if not check else (None, None)
            if job is None or fut is None:
                self._check_card()
                continue
            self._run(job, fut)
        for _job, fut in pending:
            self._deliver(fut, None, CardError("card.closed", "the agent is stopping"))
        self._close_card()

    def _run(self, job: Job, fut: asyncio.Future[Any]) -> None:
        result: Any = None
        exc: BaseException | None = None
        try:
            if self.card is None:
                self._adopt(self._opener())
                self._set_state({"present": True, "error": None})
            assert self.card is not None
            result = self._attempt(job, self.card)
        except AgentError as e:
            exc = e
            if e.code in REOPEN_CODES:
                self._close_card()
                self._set_state({"present": False, "error": e.code})
        except Exception as e:  # noqa: BLE001 - a driver bug must not kill the worker
            log.error("card job failed: %s", type(e).__name__)
            exc = AgentError("card.error", "card access failed")
        self._note_resets()
        self._deliver(fut, result, exc)

    # -- resets ------------------------------------------------------------------------------
    def _adopt(self, card: Card) -> None:
        self.card = card
        self._card_resets = card.resets
        card.transport.on_reset = self._reset_signalled

    def _reset_signalled(self, why: str) -> None:
        """The transport saw a reset (any thread): check the card between requests."""
        with self._cv:
            self._check_queued = True
            self._cv.notify()

    def _check_card(self) -> None:
        card = self.card
        if card is None:
            return
        try:
            card.check()  # reopens the ISIM's channel now
        except AgentError as e:
            log.warning("card check after a reset: %s", e.code)
            if e.code in REOPEN_CODES:
                self._close_card()
                self._set_state({"present": False, "error": e.code})
        except Exception as e:  # noqa: BLE001
            log.error("card check failed: %s", type(e).__name__)
        self._note_resets()

    def _note_resets(self) -> None:
        """Announce resets the card layer noticed (``card`` event, ``reset: true``)."""
        card = self.card
        if card is None or card.resets == self._card_resets:
            return
        self.resets += card.resets - self._card_resets
        self._card_resets = card.resets
        if self._loop is not None:
            event = {"present": True, "error": None, "reset": True, "resets": self.resets}
            self._loop.call_soon_threadsafe(self._on_state, event)

    def health(self) -> dict[str, Any]:
        """For status: resets noticed, and the AT port's figures (resyncs, late lines...)."""
        out: dict[str, Any] = {"resets": self.resets}
        port = getattr(getattr(self.card, "transport", None), "port", None)
        counters = getattr(port, "counters", None)
        if callable(counters):
            out["at"] = counters()
        return out

    def _attempt(self, job: Job, card: Card) -> Any:
        """Run ``job``. A card or modem reset re-powers the UICC and PIN1 must be given again:
        when a command is refused with 6982 (security status not satisfied) and ``relock``
        gives the PIN, the job runs once more; the refused command was not executed
        (TS 102 221 10.2.1.5), so nothing runs twice."""
        try:
            return job(card)
        except CardError as e:
            if e.code != "card.security_status" or self.relock is None or not self.relock(card):
                raise
        log.info("PIN1 given again after the card asked for it; the request runs once more")
        return job(card)

    def _deliver(self, fut: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            self._busy = False
            if fut.cancelled():
                if hasattr(result, "zeroize"):
                    result.zeroize()  # nobody will take these keys any more
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # loop closed: shutting down
            if hasattr(result, "zeroize"):
                result.zeroize()

    def _set_state(self, state: CardState) -> None:
        changed = state.get("present") != self.state.get("present")
        self.state = state
        if changed and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._on_state, dict(state))
            except RuntimeError:  # the loop is closed: the agent stopped while a job hung
                pass

    def _close_card(self) -> None:
        card, self.card = self.card, None
        if card is not None:
            try:
                card.close()  # closes the ISIM's logical channel, then the transport
            except Exception:  # noqa: BLE001 - the path may be gone already
                try:
                    card.transport.close()
                except Exception:  # noqa: BLE001
                    pass


def open_card(
    cfg: Config,
    on_urc: Callable[[str], None] | None = None,
    pin_gate: PinGate | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> Card:
    """Open the configured card path and the Card facade (runs in the worker thread).

    When the card is reached over the [modem] port itself, that port's URC lines
    (+CIREPH) come through the card transport and go to ``on_urc``; with ``loop`` (the
    agent's) the port is read on that loop, so they reach it with no hop between threads.
    """
    from ue_agent.card.session import Card
    from ue_agent.transports import open_transport

    shared = cfg.card.transport == "at" and cfg.modem.port == cfg.card.port
    transport = open_transport(cfg.card, on_urc=on_urc, loop=loop) if shared else open_transport(cfg.card)
    if shared:  # no separate watcher opens this port: ask for the SRVCC reports here
        from ue_agent.drivers.at_modem import CglaTransport, CsimTransport, enable_ims_reporting

        assert isinstance(transport, CsimTransport | CglaTransport)
        refused = enable_ims_reporting(transport.port)
        if refused:
            log.warning("modem %s refused %s: no handover reports", cfg.modem.port, ", ".join(refused))
    card = Card(transport)
    if pin_gate is not None:  # PIN1: VERIFY / AT+CPIN from the credential (ue_agent.pin_unlock)
        from ue_agent.pin_unlock import unlock

        try:
            unlock(card, pin_gate)
        except BaseException:
            transport.close()
            raise
    from ue_agent.channel_record import attach

    attach(card, cfg.api.socket)  # close what a killed predecessor left open, note ours
    return card


class CardOps:
    """GbaClient's ``card_ops``: the card calls, each through the one card worker."""

    def __init__(self, worker: CardWorker) -> None:
        self.worker = worker

    async def authenticate(self, rand: bytes, autn: bytes) -> AkaOutcome:
        return await self.worker.call(lambda card: card.authenticate(rand, autn))

    async def gba_bootstrap(
        self, rand: bytes, autn: bytes
    ) -> GbaBootstrapRes | AkaMacFailure | AkaSyncFailure:
        return await self.worker.call(lambda card: card.gba_bootstrap(rand, autn))

    async def gba_naf_derive(self, naf_id: bytes, impi: str) -> Secret:
        return await self.worker.call(lambda card: card.gba_naf_derive(naf_id, impi))

    async def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str) -> None:
        await self.worker.call(lambda card: card.store_gba_bootstrap(rand, btid, lifetime))
