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
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ue_agent import __version__
from ue_agent.api.core import Request
from ue_agent.api.errors import BAD_REQUEST, api_error
from ue_agent.config import Config
from ue_agent.errors import AgentError, CardError, KmsError, MediaError
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
    transport = open_transport(cfg.card, on_urc=on_urc if shared else None)
    if shared:  # no separate watcher opens this port: ask for the SRVCC reports here
        from ue_agent.drivers.at_modem import enable_ims_reporting

        refused = enable_ims_reporting(transport.port)
        if refused:
            log.warning("modem %s refused %s: no handover reports", cfg.modem.port, ", ".join(refused))
    return Card(transport)


MAX_PENDING_OFFERS = 64
#: session ids the media store accepts (checked here too for offers not yet in the store)
_SESSION_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")


def _streams_out(media: list[str], lines: list[list[str]]) -> list[dict[str, Any]]:
    return [{"media": m, "lines": ls} for m, ls in zip(media, lines, strict=True)]


def _offer_keys(offer: Any) -> list[Secret]:
    return [s for st in offer.streams for k in st.keys.values() for s in (k.master_key, k.master_salt)]


def _stream_secrets(store: Any, sid: str) -> list[Secret]:
    out: list[Secret] = []
    for st in store.streams(sid):
        for k in (st.tx, st.rx):
            if k is None:
                continue
            out += [k.master_key, k.master_salt] if hasattr(k, "master_key") else [k.key]
    return out


_TLS_MEDIA = {"message": "TCP/TLS/MSRP", "msrp": "TCP/TLS/MSRP", "bfcp": "TCP/TLS/BFCP"}


def _mikey_stream(media: str, suite: str | None) -> Any:
    """A media name -> the MIKEY crypto session to key: SRTP for RTP media, TLS for MSRP/BFCP."""
    from ue_agent.kms.streams import SrtpStream, TlsStream

    if media in _TLS_MEDIA:
        return TlsStream(_TLS_MEDIA[media])
    return SrtpStream(suite) if suite else SrtpStream()


def _mikey_streams(keys: list[Any], media: list[str] | None) -> list[Any]:
    """MIKEY gives one key per crypto session, for both directions (SSRCs keep them apart)."""
    from ue_agent.media.keys import StreamKeys, TlsPskKeys

    if media is not None and len(media) != len(keys):
        for k in keys:
            k.zeroize()
        raise MediaError("media.bad_session", f"'media' must name {len(keys)} streams", streams=len(keys))
    names = media or ["message" if isinstance(k, TlsPskKeys) else "audio" for k in keys]
    return [StreamKeys(name, tx=k) for name, k in zip(names, keys, strict=True)]


def _mikey_message(value: str, name: str) -> bytes:
    """A MIKEY message given as base64 or as the SDP line ``a=key-mgmt:mikey <base64>``."""
    from ue_agent.kms.sdp import parse

    if value.startswith(("a=key-mgmt:", "key-mgmt:")):
        return parse(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise api_error(BAD_REQUEST, f"'{name}' must be base64 or an a=key-mgmt line", param=name) from None
    if not raw:
        raise api_error(BAD_REQUEST, f"'{name}' is empty", param=name)
    return raw


class CardOps:
    """GbaClient's ``card_ops``: the card calls, each through the one card worker."""

    def __init__(self, worker: CardWorker) -> None:
        self.worker = worker

    async def authenticate(self, rand: bytes, autn: bytes) -> Any:
        return await self.worker.call(lambda card: card.authenticate(rand, autn))

    async def gba_bootstrap(self, rand: bytes, autn: bytes) -> Any:
        return await self.worker.call(lambda card: card.gba_bootstrap(rand, autn))

    async def gba_naf_derive(self, naf_id: bytes, impi: str) -> Secret:
        return await self.worker.call(lambda card: card.gba_naf_derive(naf_id, impi))

    async def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str) -> Any:
        return await self.worker.call(lambda card: card.store_gba_bootstrap(rand, btid, lifetime))


class NetworkSide:
    """GBA (Ub), the NAF client (Ua) and the KMS client, built on first use.

    The HTTP client and the GBA/NAF/KMS modules are imported only here, when an
    operation needs the network.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.http: Any = None
        self.gba: Any = None
        self.kms_client: Any = None
        self.kms_state = "unused"

    def _require(self) -> tuple[str, str, str, str]:
        net = self.agent.cfg.network
        if not (net.bsf_url and net.kms_url):
            raise KmsError("kms.not_configured", "[network] bsf_url and kms_url are needed for MIKEY-TICKET")
        return net.bsf_url, net.bsf_host or "", net.kms_url, net.kms_host or ""

    async def kms(self) -> Any:
        if self.kms_client is not None:
            return _Tracked(self.kms_client, self)
        bsf_url, bsf_fqdn, kms_url, kms_fqdn = self._require()
        ids = self.agent.identities
        if ids is None:
            await self.agent.read_identities()
            ids = self.agent.identities
            if ids is None:
                raise CardError(
                    self.agent.card.state.get("error") or "card.absent", "the card is not available"
                )
        from ue_agent.drivers.http import HttpClient
        from ue_agent.gba.client import GbaClient
        from ue_agent.gba.naf_client import NafClient
        from ue_agent.kms.client import KmsClient

        self.http = HttpClient()
        self.gba = GbaClient(
            CardOps(self.agent.card),
            bsf_url,
            bsf_fqdn,
            ids.impi,
            self.http,
            gba_u=ids.gba_u,
            on_event=self._gba_event,
        )
        naf = NafClient(self.gba, self.http)
        self.kms_client = KmsClient(naf, kms_url, kms_fqdn, ids.impus[0], gba=self.gba)
        return _Tracked(self.kms_client, self)

    def _gba_event(self, kind: str, info: dict[str, Any]) -> None:
        self.agent.emit("bootstrap", dict(info))

    def status(self) -> dict[str, Any]:
        net = self.agent.cfg.network
        out: dict[str, Any] = {
            "kms": {
                "url": net.kms_url,
                "fqdn": net.kms_host,
                "state": self.kms_state if net.kms_url else "off",
            }
        }
        st = self.gba.state if self.gba is not None else None
        boot: dict[str, Any] = {"bsf": net.bsf_url, "state": "bootstrapped" if st else "none"}
        if st is not None:
            boot.update(btid=st.btid, expires=st.lifetime_text, gba_u=st.gba_u, runs=self.gba.runs)
        out["bootstrap"] = boot
        return out

    async def close(self) -> None:
        if self.kms_client is not None:
            self.kms_client.forget()
        if self.gba is not None:
            self.gba.close()
        if self.http is not None:
            await self.http.close()


class _Tracked:
    """KmsClient calls that record whether the KMS answered (for status)."""

    def __init__(self, client: Any, side: NetworkSide) -> None:
        self.client, self.side = client, side

    async def offer(self, *a: Any, **kw: Any) -> Any:
        return await self._track(self.client.offer(*a, **kw))

    async def answer(self, *a: Any, **kw: Any) -> Any:
        return await self._track(self.client.answer(*a, **kw))

    def complete(self, *a: Any, **kw: Any) -> Any:
        return self.client.complete(*a, **kw)

    async def _track(self, coro: Any) -> Any:
        try:
            result = await coro
        except AgentError as exc:
            if exc.code.startswith(("gba.", "kms.")) and "unreachable" in exc.code:
                self.side.kms_state = "unreachable"
            raise
        self.side.kms_state = "reachable"
        return result


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
        self._store: Any = None  # the KeyStore, made with the first media session (see store)
        #: SDES offers waiting for their answer: session id -> (LocalOffer, owner uid)
        self.pending_offers: dict[str, tuple[Any, int]] = {}
        #: MIKEY offers waiting for TRANSFER_RESP: session id -> (PendingOffer, media, owner uid)
        self.pending_mikey: dict[str, tuple[Any, list[str], int]] = {}
        #: who negotiated each session: only that uid (or root) may use it
        self.owners: dict[str, int] = {}
        self.network = NetworkSide(self)
        #: (kms_url, capabilities on the wire), built on the first capabilities request
        self._caps: tuple[str | None, dict[str, Any]] | None = None
        self._ops: dict[str, Callable[[Request, Any], Any]] = {
            "status": self.op_status,
            "capabilities": self.op_capabilities,
            "ims.authenticate": self.op_ims_authenticate,
            "sdes.offer": self.op_sdes_offer,
            "sdes.answer": self.op_sdes_answer,
            "mikey.offer": self.op_mikey_offer,
            "mikey.answer": self.op_mikey_answer,
            "mikey.complete": self.op_mikey_complete,
            "session.keys": self.op_session_keys,
            "session.report": self.op_session_report,
            "session.close": self.op_session_close,
        }

    @property
    def store(self) -> Any:
        """The media KeyStore. Built (and its modules imported) on first use, not at start-up:
        an agent that has negotiated no session has nothing in it."""
        if self._store is None:
            from ue_agent.media.store import KeyStore

            self._store = KeyStore(self.emit)
        return self._store

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from ue_agent.modem_reports import urc_sink

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
        """Zeroize every key; returns (key objects zeroized, keys left non-zero)."""
        await asyncio.get_running_loop().run_in_executor(None, self.card.stop)
        held = [k for _, (offer, _) in self.pending_offers.items() for k in _offer_keys(offer)]
        store = self._store
        if store is not None:
            held += [k for sid in list(self.owners) if sid in store for k in _stream_secrets(store, sid)]
        self.keys.add(*held)
        zeroized, left = self.keys.zeroize_all()
        self.pending_mikey.clear()
        await self.network.close()
        for offer, _ in self.pending_offers.values():
            offer.zeroize()
        self.pending_offers.clear()
        if self._store is not None:
            self._store.zeroize_all()
        self.owners.clear()
        return zeroized, left + sum(1 for k in held if not k.zeroized)

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
        from ue_agent.handover.state import SessionState as HoState

        for d in report.decisions:
            if d.release_keys:
                self._release_session_keys(d.session)
            elif d.new is HoState.HANDOVER_PENDING:
                self.store.on_handover("started", [d.session])
            elif d.new is HoState.ACTIVE:
                self.store.on_handover("cancelled", [d.session])
        self.emit("handover", report.event)

    def _release_session_keys(self, session: str) -> None:
        """SRVCC done: the session's keys are zeroized by the media store."""
        self.store.release(session)

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, req: Request, peer: Any) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """Run one request (the API server's handler).

        Operations that only touch memory (status, capabilities, SDES, session.*) are plain
        methods and return their result at once; those that wait for the card or the
        network are coroutines, returned for the server to run as a task.
        """
        op = self._ops.get(req.op)
        if op is None:
            raise AgentError("agent.unavailable", f"{req.op} is not available in this build")
        return op(req, peer)

    # -- operations ---------------------------------------------------------------------------
    def op_status(self, req: Request, peer: Any) -> dict[str, Any]:
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
        store = self._store  # None: no session was ever negotiated
        by_state = store.count_by_state() if store is not None else {}
        out.update(self.network.status())
        out["sessions"] = {
            "open": len(store) if store is not None else 0,
            "pending_offers": len(self.pending_offers) + len(self.pending_mikey),
            "by_state": by_state,
        }
        for extra in self.extra_status:
            out.update(extra())
        return out

    def op_capabilities(self, req: Request, peer: Any) -> dict[str, Any]:
        kms_url = self.cfg.network.kms_url
        if self._caps is None or self._caps[0] != kms_url:  # first call, or a reload changed it
            from ue_agent.media.capabilities import device_capabilities

            self._caps = (kms_url, device_capabilities(kms_url=kms_url).to_wire())
        # The cached inner objects are shared between replies: they are only serialized.
        caps = dict(self._caps[1])
        caps["aka"] = {"application": self.identities.application if self.identities else None}
        return caps

    # -- media sessions ------------------------------------------------------------------------
    def _owned(self, session: str, peer: Any) -> str:
        """The session if ``peer`` may use it; a stranger's session looks like no session."""
        owner = self.owners.get(session)
        if owner is not None and peer.uid not in (0, owner):
            raise MediaError("media.unknown_session", "no such media session", session=session[:128])
        return session

    def _new_session_id(self, wanted: str | None) -> str:
        taken = (self.owners, self.pending_offers, self.pending_mikey)
        if wanted is not None and any(wanted in t for t in taken):
            raise MediaError("media.session_exists", "a session with this id exists", session=wanted[:128])
        if wanted is None:
            import secrets

            wanted = "s-" + secrets.token_hex(8)
        return wanted

    def _register(self, sid: str, streams: list[Any], kind: str, peer: Any) -> str:
        sid = self.store.add(streams, kind=kind, session_id=sid, peer=f"uid:{peer.uid}")
        self.owners[sid] = peer.uid
        self.handover.add_session(sid)
        return sid

    def op_sdes_offer(self, req: Request, peer: Any) -> dict[str, Any]:
        from ue_agent.media.sdes import make_offer

        p = req.params
        if len(self.pending_offers) + len(self.pending_mikey) >= MAX_PENDING_OFFERS:
            raise MediaError("media.too_many_sessions", "too many SDES offers wait for an answer")
        sid = self._new_session_id(p.get("session"))
        if not _SESSION_ID.fullmatch(sid):
            raise MediaError("media.bad_session", "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")
        lines, local = make_offer(p["media"], p.get("suites"), lifetime=p.get("lifetime"), e2ae=p["e2ae"])
        self.pending_offers[sid] = (local, peer.uid)
        return {"session": sid, "streams": _streams_out(p["media"], lines)}

    def op_sdes_answer(self, req: Request, peer: Any) -> dict[str, Any]:
        from ue_agent.media.sdes import accept_answer, make_answer

        p = req.params
        if ("offer" in p) == ("answer" in p):
            raise api_error(
                BAD_REQUEST, "give 'offer' (to answer it) or 'answer' (to our offer)", param="offer"
            )
        if "answer" in p:  # we offered: the peer's answer completes the session
            sid = p.get("session")
            if sid is None:
                raise api_error(BAD_REQUEST, "'session' (from sdes.offer) is required", param="session")
            entry = self.pending_offers.get(sid)
            if entry is None or peer.uid not in (0, entry[1]):
                raise MediaError(
                    "media.unknown_session", "no SDES offer waits under this session", session=sid
                )
            local = self.pending_offers.pop(sid)[0]
            try:
                streams = accept_answer(local, p["answer"])
            finally:
                local.zeroize()
            self._register(sid, streams, "sdes", peer)
            return {"session": sid, "state": "active", "streams": [s.media for s in streams]}
        media = p.get("media")
        sid = self._new_session_id(p.get("session"))
        lines, streams = make_answer(p["offer"], media, p.get("suites"))
        self._register(sid, streams, "sdes", peer)
        return {"session": sid, "streams": _streams_out([s.media for s in streams], lines)}

    # -- MIKEY-TICKET (KMS) ----------------------------------------------------------------------
    async def op_mikey_offer(self, req: Request, peer: Any) -> dict[str, Any]:
        from ue_agent.kms.sdp import build

        p = req.params
        if len(self.pending_offers) + len(self.pending_mikey) >= MAX_PENDING_OFFERS:
            raise MediaError("media.too_many_sessions", "too many offers wait for an answer")
        sid = self._new_session_id(p.get("session"))
        if not _SESSION_ID.fullmatch(sid):
            raise MediaError("media.bad_session", "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")
        streams = [_mikey_stream(m, p.get("suite")) for m in p["media"]]
        kms = await self.network.kms()
        res = await kms.offer(p["responder"], streams, recipients=p.get("recipients"), group=p["group"])
        self.pending_mikey[sid] = (res.pending, p["media"], peer.uid)
        return {
            "session": sid,
            "transfer_init": b64(res.transfer_init),
            "key_mgmt": build(res.transfer_init),
            "reused_ticket": res.reused_ticket,
        }

    async def op_mikey_answer(self, req: Request, peer: Any) -> dict[str, Any]:
        from ue_agent.kms.sdp import build

        p = req.params
        sid = self._new_session_id(p.get("session"))
        if not _SESSION_ID.fullmatch(sid):
            raise MediaError("media.bad_session", "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")
        message = _mikey_message(p["transfer_init"], "transfer_init")
        kms = await self.network.kms()
        res = await kms.answer(message)
        streams = _mikey_streams(res.keys, p.get("media"))
        self._register(sid, streams, "mikey", peer)
        return {
            "session": sid,
            "peer": res.peer_uri,
            "transfer_resp": b64(res.transfer_resp),
            "key_mgmt": build(res.transfer_resp),
            "streams": [s.media for s in streams],
        }

    async def op_mikey_complete(self, req: Request, peer: Any) -> dict[str, Any]:
        p = req.params
        sid = p["session"]
        entry = self.pending_mikey.get(sid)
        if entry is None or peer.uid not in (0, entry[2]):
            raise MediaError("media.unknown_session", "no MIKEY offer waits under this session", session=sid)
        message = _mikey_message(p["transfer_resp"], "transfer_resp")
        kms = await self.network.kms()
        keys = kms.complete(entry[0], message)  # raises on a bad answer; the offer stays for a retry
        del self.pending_mikey[sid]
        streams = _mikey_streams(keys, p.get("media") or entry[1])
        self._register(sid, streams, "mikey", peer)
        return {"session": sid, "state": "active", "streams": [s.media for s in streams]}

    def op_session_keys(self, req: Request, peer: Any) -> dict[str, Any]:
        sid = self._owned(req.params["session"], peer)
        out = self.store.keys(sid)
        ho = self.handover.state_of(sid)
        if ho is not None:
            out["handover"] = ho.value
        return out

    def op_session_report(self, req: Request, peer: Any) -> dict[str, Any]:
        p = req.params
        sid = self._owned(p["session"], peer)
        return {
            "session": sid,
            **self.store.report(sid, p["ssrc"], p["index"], srtcp_index=p.get("srtcp_index")),
        }

    def op_session_close(self, req: Request, peer: Any) -> dict[str, Any]:
        sid = self._owned(req.params["session"], peer)
        pending = self.pending_offers.get(sid)
        if pending is not None and peer.uid in (0, pending[1]):
            self.pending_offers.pop(sid)[0].zeroize()
            return {"session": sid, "state": "closed"}
        mk = self.pending_mikey.get(sid)
        if mk is not None and peer.uid in (0, mk[2]):
            # a pending MIKEY offer holds no key of its own: the ticket key stays in the
            # KMS client's cache (for the next offer to this peer) until it expires or we stop
            del self.pending_mikey[sid]
            return {"session": sid, "state": "closed"}
        self.store.close(sid)
        self.owners.pop(sid, None)
        self.handover.remove_session(sid)
        return {"session": sid, "state": "closed"}

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
