"""The agent: what each socket operation does, wired to the card, GBA, KMS and media store.

The card lives in ONE worker thread (:class:`CardWorker`); every card access goes through
its queue, one job at a time. A job asked for while another runs is refused with
``card.busy`` at once (oFono's explicit Busy), so no request waits behind a slow card.
Every key the agent holds or hands out is a :class:`~ue_agent.secret.Secret` registered
in :class:`KeyRegistry`; :meth:`Agent.stop` zeroizes them all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ue_agent import __version__
from ue_agent.api.core import Request
from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.config import Config
from ue_agent.errors import AgentError, CardError, MediaError
from ue_agent.handover.state import HandoverReport, HandoverTracker
from ue_agent.secret import Secret

log = logging.getLogger(__name__)
T = TypeVar("T")
Emit = Callable[[str, dict[str, Any]], None]

#: transport failures after which the card is re-opened on the next job.
_REOPEN_CODES = {"card.absent", "card.removed", "card.reader_gone", "card.pcsc_unavailable", "modem.gone"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class KeyRegistry:
    """Every Secret the agent holds, so shutdown can zeroize all of them and say so."""

    def __init__(self) -> None:
        self._keys: list[Secret] = []
        self._lock = threading.Lock()

    def add(self, *secrets: Secret | None) -> None:
        with self._lock:
            self._keys.extend(s for s in secrets if s is not None)
            self._keys = [s for s in self._keys if not s.zeroized]

    def zeroize_all(self) -> tuple[int, int]:
        """Zeroize every key; returns (how many were live, how many are still not zero)."""
        with self._lock:
            live = [s for s in self._keys if not s.zeroized]
            for s in live:
                s.zeroize()
            left = sum(1 for s in self._keys if not s.zeroized)
            self._keys.clear()
        return len(live), left


class CardWorker:
    """One thread owns the card; jobs are functions of the Card run there, one at a time."""

    def __init__(self, opener: Callable[[], Any], on_state: Callable[[dict[str, Any]], None]) -> None:
        self._opener = opener
        self._on_state = on_state
        self._jobs: list[tuple[Callable[[Any], Any], asyncio.Future]] = []
        self._cv = threading.Condition()
        self._busy = False
        self._stop = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, name="ue-agent-card", daemon=True)
        self.card: Any = None
        self.state: dict[str, Any] = {"present": False, "error": None}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._busy

    async def call(self, job: Callable[[Any], T]) -> T:
        if self._busy:
            raise CardError("card.busy", "the card is serving another request; retry")
        if self._stop:
            raise CardError("card.closed", "the agent is stopping")
        assert self._loop is not None, "CardWorker.start() first"
        self._busy = True
        fut: asyncio.Future = self._loop.create_future()
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
                while not self._jobs and not self._stop:
                    self._cv.wait()
                if self._stop:
                    pending, self._jobs = self._jobs, []
                    break
                job, fut = self._jobs.pop(0)
            self._run(job, fut)
        for _job, fut in pending:
            self._deliver(fut, None, CardError("card.closed", "the agent is stopping"))
        self._close_card()

    def _run(self, job: Callable[[Any], Any], fut: asyncio.Future) -> None:
        try:
            if self.card is None:
                self.card = self._opener()
                self._set_state({"present": True, "error": None})
            result, exc = job(self.card), None
        except AgentError as e:
            result, exc = None, e
            if e.code in _REOPEN_CODES:
                self._close_card()
                self._set_state({"present": False, "error": e.code})
        except Exception as e:  # noqa: BLE001 - a driver bug must not kill the worker
            log.error("card job failed: %s", type(e).__name__)
            result, exc = None, AgentError("card.error", "card access failed")
        self._deliver(fut, result, exc)

    def _deliver(self, fut: asyncio.Future, result: Any, exc: BaseException | None) -> None:
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

    def _set_state(self, state: dict[str, Any]) -> None:
        changed = state.get("present") != self.state.get("present")
        self.state = state
        if changed and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_state, dict(state))

    def _close_card(self) -> None:
        card, self.card = self.card, None
        transport = getattr(card, "transport", None)
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001
                pass


def open_card(cfg: Config, on_urc: Callable[[str], None] | None = None) -> Any:
    """Open the configured card path and the Card facade (runs in the worker thread).

    When the card is reached over the [modem] port itself, that port's URC lines
    (+CIREPH) come through the card transport and go to ``on_urc``.
    """
    from ue_agent.card.session import Card
    from ue_agent.transports import open_transport

    shared = cfg.card.transport == "at" and cfg.modem.port == cfg.card.port
    return Card(open_transport(cfg.card, on_urc=on_urc if shared else None))


def _split_nonce(nonce: str) -> tuple[bytes, bytes]:
    """RFC 3310 nonce: base64(RAND || AUTN || server data) -> (RAND, AUTN)."""
    try:
        raw = base64.b64decode(nonce, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(BAD_REQUEST, "parameter 'nonce' must be base64", param="nonce") from None
    if len(raw) < 32:
        raise api_error(BAD_REQUEST, "parameter 'nonce' must hold RAND and AUTN (32 bytes)", param="nonce")
    return raw[:16], raw[16:32]


class Agent:
    def __init__(self, cfg: Config, emit: Emit, opener: Callable[[], Any] | None = None) -> None:
        self.cfg = cfg
        self.emit = emit
        self.keys = KeyRegistry()
        self.card = CardWorker(opener or (lambda: open_card(self.cfg, self._urc)), self._card_state)
        self._urc: Callable[[str], None] | None = None
        self.extra_status: list[Callable[[], dict[str, Any]]] = []
        self.handover = HandoverTracker()
        self.identities: Any = None
        self.started = time.time()
        self.counters = {"authentications": 0, "mac_failures": 0, "sync_failures": 0}
        self._ops: dict[str, Callable[[Request, Any], Any]] = {
            "status": self.op_status,
            "capabilities": self.op_capabilities,
            "ims.authenticate": self.op_ims_authenticate,
        }

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from ue_agent.handover.modem import urc_sink

        self._urc = urc_sink(asyncio.get_running_loop(), self.on_cireph)
        self.card.start()
        await self.read_identities()

    async def read_identities(self) -> None:
        try:
            self.identities = await self.card.call(lambda card: card.identities())
        except AgentError as exc:
            log.warning("card not ready: %s", exc.code)
            self.card.state = {"present": False, "error": exc.code}

    def reconfigure(self, cfg: Config) -> None:
        self.cfg = cfg

    async def stop(self) -> tuple[int, int]:
        """Zeroize every key; returns (keys zeroized, keys left non-zero)."""
        await asyncio.get_running_loop().run_in_executor(None, self.card.stop)
        return self.keys.zeroize_all()

    def _card_state(self, state: dict[str, Any]) -> None:
        self.emit("card", {"present": state["present"], "error": state.get("error")})

    def on_cireph(self, value: int) -> None:
        """A ``+CIREPH: <srvcch>`` URC from the modem."""
        self._apply(self.handover.on_cireph(value))

    def on_net_event(self, ev: Any) -> None:
        """A LinkChange / AddressChange from the netlink monitor."""
        if hasattr(ev, "address"):
            what = "address_added" if ev.added else "address_removed"
        else:
            what = "link_up" if ev.up else "link_down"
        self._apply(self.handover.on_ip_change(ev.ifname, what))

    def _apply(self, report: HandoverReport) -> None:
        for d in report.decisions:
            if d.release_keys:
                self._release_session_keys(d.session)
        self.emit("handover", report.event)

    def _release_session_keys(self, session: str) -> None:
        """SRVCC done: the session's keys are zeroized (hook of the media store)."""

    # -- dispatch -----------------------------------------------------------------------------
    async def handle(self, req: Request, peer: Any) -> dict[str, Any]:
        op = self._ops.get(req.op)
        if op is None:
            raise AgentError("agent.unavailable", f"{req.op} is not available in this build")
        return await op(req, peer)

    # -- operations ---------------------------------------------------------------------------
    async def op_status(self, req: Request, peer: Any) -> dict[str, Any]:
        return self.status()

    def status(self) -> dict[str, Any]:
        ids = self.identities
        card: dict[str, Any] = {
            "transport": self.cfg.card.transport,
            "present": bool(self.card.state.get("present")),
            "busy": self.card.busy,
        }
        if self.card.state.get("error"):
            card["error"] = self.card.state["error"]
        if ids is not None:
            card.update(application=ids.application, impi=ids.impi, impus=list(ids.impus), domain=ids.domain)
        out = {
            "agent": {"version": __version__, "uptime_s": int(time.time() - self.started)},
            "card": card,
            "counters": dict(self.counters),
            "handover": self.handover.snapshot(),
        }
        for extra in self.extra_status:
            out.update(extra())
        return out

    async def op_capabilities(self, req: Request, peer: Any) -> dict[str, Any]:
        raise MediaError("media.unavailable", "capabilities are not available in this build")

    async def op_ims_authenticate(self, req: Request, peer: Any) -> dict[str, Any]:
        p = req.params
        if "nonce" in p:
            if "rand" in p or "autn" in p:
                raise api_error(BAD_REQUEST, "give either 'nonce' or 'rand' and 'autn'", param="nonce")
            rand, autn = _split_nonce(p["nonce"])
        elif "rand" in p and "autn" in p:
            rand, autn = p["rand"], p["autn"]
        else:
            raise api_error(BAD_REQUEST, "'rand' and 'autn' (or 'nonce') are required", param="rand")
        from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure

        outcome = await self.card.call(lambda card: card.authenticate(rand, autn))
        self.counters["authentications"] += 1
        if isinstance(outcome, AkaSuccess):
            try:
                out = {
                    "result": "success",
                    "res": b64(outcome.res.reveal()),
                    "ck": b64(outcome.ck.reveal()),
                    "ik": b64(outcome.ik.reveal()),
                }
            finally:
                outcome.zeroize()
            return out
        if isinstance(outcome, AkaSyncFailure):
            self.counters["sync_failures"] += 1
            return {"result": "sync_failure", "auts": b64(outcome.auts)}
        if isinstance(outcome, AkaMacFailure):
            self.counters["mac_failures"] += 1
            self.emit(
                "security.warning",
                {"kind": "auth_mac_failure", "message": "the card rejected the network's AUTN (MAC)"},
            )
            raise CardError("card.auth_mac_failure", "the card found the network's MAC wrong (AUTN rejected)")
        raise AgentError("agent.internal", "unexpected card outcome")
