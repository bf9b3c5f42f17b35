"""The GBA client: Ub over HTTP around :class:`~ue_agent.gba.ub.UbSession`, and Ks_NAF.

``GbaClient(card_ops, bsf_url, bsf_fqdn, impi, http, gba_u=False)``; ``http`` is an
:class:`ue_agent.httpmsg.HttpRequester` (the daemon injects :class:`ue_agent.drivers.http.HttpClient`):

- ``await bootstrap(force=False) -> BootstrapState``: runs Ub when there is no bootstrap,
  when fewer than ``renew_margin_s`` seconds of its lifetime remain, or when forced.
  Concurrent callers share one run: the run is a task of its own that callers wait on (a
  caller that gives up, e.g. at its operation's deadline, does not stop it), so a BSF that
  never answers costs one run of ``timeout_s`` however many callers wait, and they all get
  its outcome (``gba.bsf_unreachable``) at once. A failed run keeps nothing (no B-TID, no Ks).
- ``await ks_naf(naf_fqdn, ua_id) -> (btid, Secret)``: GBA_ME derives Ks_NAF from Ks
  (TS 33.220 B.3); GBA_U asks the card for Ks_ext_NAF (Ks never leaves the UICC).

``card_ops`` is any object with ``async authenticate(rand, autn)``; for GBA_U also ``async
gba_bootstrap(rand, autn)``, ``async gba_naf_derive(naf_id, impi) -> Secret`` and,
optionally, ``async store_gba_bootstrap(rand, btid, lifetime)`` (EF_GBABP, which the
card's NAF derivation reads). Card errors (``card.*``) pass through unchanged.

``on_event(kind, info)`` is called with kind ``"bootstrap"`` and a JSON-ready dict without
keys: ``{"ok": True, "btid", "lifetime", "gba_u", "resynchronised"}`` or ``{"ok": False,
"code", "message"}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from ue_agent.crypto.kdf import UA_KMS, ks_naf, naf_id
from ue_agent.errors import AgentError, GbaError
from ue_agent.gba.ub import Bootstrap, CardChallenge, UbSession
from ue_agent.httpmsg import Headers, HttpError, HttpRequester
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.card.results import AkaOutcome, GbaBootstrapRes


class CardOps(Protocol):
    """The card calls GBA needs (the agent runs them on its card worker). GBA_U cards also
    give ``gba_bootstrap`` and ``gba_naf_derive``, and optionally ``store_gba_bootstrap``."""

    async def authenticate(self, rand: bytes, autn: bytes) -> AkaOutcome: ...

    async def gba_bootstrap(self, rand: bytes, autn: bytes) -> GbaBootstrapRes | AkaOutcome: ...

    async def gba_naf_derive(self, naf_id: bytes, impi: str) -> Secret: ...


log = logging.getLogger(__name__)

MAX_BSF_BODY = 64 * 1024


@dataclass
class BootstrapState:
    """The current bootstrap: B-TID, lifetime, and (GBA_ME) Ks in memory until expiry."""

    btid: str
    lifetime: datetime
    lifetime_text: str
    expires_at: float  # epoch seconds
    rand: bytes
    impi: str
    gba_u: bool
    ks: Secret | None = field(default=None, repr=False)
    resynchronised: bool = False

    def remaining(self, now: float) -> float:
        return self.expires_at - now

    def to_info(self) -> dict:
        """Event/status form: no keys."""
        return {
            "btid": self.btid,
            "lifetime": self.lifetime_text,
            "gba_u": self.gba_u,
            "resynchronised": self.resynchronised,
        }

    def zeroize(self) -> None:
        if self.ks is not None:
            self.ks.zeroize()

    def __repr__(self) -> str:
        return f"BootstrapState(btid={self.btid!r}, lifetime={self.lifetime_text!r}, gba_u={self.gba_u})"


class GbaClient:
    def __init__(
        self,
        card_ops: CardOps,
        bsf_url: str,
        bsf_fqdn: str,
        impi: str,
        http: HttpRequester,
        gba_u: bool = False,
        *,
        on_event: Callable[[str, dict], None] | None = None,
        renew_margin_s: float = 60.0,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.card_ops = card_ops
        self.bsf_url = bsf_url
        self.bsf_fqdn = bsf_fqdn.lower()
        self.impi = impi
        self.http = http
        self.gba_u = gba_u
        self.on_event = on_event
        self.renew_margin_s = renew_margin_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._state: BootstrapState | None = None
        self._naf_keys: dict[bytes, Secret] = {}  # NAF_Id -> Ks_(ext_)NAF for the current B-TID
        self._run_task: asyncio.Task[BootstrapState] | None = None  # the Ub run in progress
        #: completed Ub runs (tests and status)
        self.runs = 0

    @property
    def state(self) -> BootstrapState | None:
        """The live bootstrap, or None (expired ones are dropped here)."""
        st = self._state
        if st is not None and st.remaining(self.clock()) <= 0:
            self.invalidate()
            return None
        return st

    def invalidate(self, btid: str | None = None) -> None:
        """Forget the bootstrap (all of it, or only if it is ``btid``) and zeroize Ks."""
        st = self._state
        if st is not None and (btid is None or st.btid == btid):
            self._state = None
            st.zeroize()
            for key in self._naf_keys.values():
                key.zeroize()
            self._naf_keys.clear()

    def secrets(self) -> list[Secret]:
        """The keys held: Ks (GBA_ME) and the Ks_(ext_)NAF derived for the current B-TID."""
        st = self._state
        out = [st.ks] if st is not None and st.ks is not None else []
        return out + list(self._naf_keys.values())

    def close(self) -> None:
        if self._run_task is not None:
            self._run_task.cancel()
        self.invalidate()

    # --- bootstrapping ------------------------------------------------------------------------
    @property
    def bootstrapping(self) -> bool:
        """A Ub run is in progress (callers wait on the BSF or the card)."""
        return self._run_task is not None

    async def bootstrap(self, force: bool = False) -> BootstrapState:
        task = self._run_task
        if task is None:
            st = self.state
            if st is not None and not force and st.remaining(self.clock()) > self.renew_margin_s:
                return st
            self.invalidate()
            task = self._run_task = asyncio.get_running_loop().create_task(self._bootstrap_run())
            task.add_done_callback(self._run_done)
        # shielded: a caller cancelled (its deadline, its connection gone) leaves the run to the others
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):  # the run was stopped, not us
                raise GbaError(
                    "gba.bsf_unreachable", "the bootstrap was stopped (new [network] settings, or stopping)"
                ) from None
            raise

    def _run_done(self, task: asyncio.Task[BootstrapState]) -> None:
        if self._run_task is task:
            self._run_task = None
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have given up

    async def _bootstrap_run(self) -> BootstrapState:
        try:
            result = await self._run()
        except AgentError as exc:
            self._emit({"ok": False, "code": exc.code, "message": exc.message})
            raise
        st = BootstrapState(
            btid=result.btid,
            lifetime=result.lifetime,
            lifetime_text=result.lifetime_text,
            expires_at=result.lifetime.timestamp(),
            rand=result.rand,
            impi=result.impi,
            gba_u=result.gba_u,
            ks=result.ks,
            resynchronised=result.resynchronised,
        )
        self._state = st
        self.runs += 1
        self._emit({"ok": True, **st.to_info()})
        log.info("bootstrapped: B-TID %s until %s", st.btid, st.lifetime_text)
        return st

    async def _run(self) -> Bootstrap:
        session = UbSession(self.impi, self.bsf_fqdn, self.gba_u, now=self.clock)
        request = session.start()
        try:
            while True:
                status, headers, body = await self._send(request)
                step = session.receive(status, headers, body)
                if isinstance(step, Bootstrap):
                    break
                request = session.card_result(await self._card(step))
            if self.gba_u:
                store = getattr(self.card_ops, "store_gba_bootstrap", None)
                if store is not None:
                    await store(step.rand, step.btid, step.lifetime_text)
            return step
        except BaseException:
            session.abort()
            raise

    async def _card(self, ch: CardChallenge):
        if self.gba_u:
            return await self.card_ops.gba_bootstrap(ch.rand, ch.autn)
        return await self.card_ops.authenticate(ch.rand, ch.autn)

    async def _send(self, request) -> tuple[int, Headers, bytes]:
        try:
            resp = await self.http.request(
                request.method,
                self.bsf_url,
                headers=request.headers,
                body=request.body or b"",
                timeout_s=self.timeout_s,
                max_body=MAX_BSF_BODY,
            )
        except HttpError as exc:
            if exc.reason == "too_large":
                raise GbaError("gba.bad_response", f"BSF answer larger than {MAX_BSF_BODY} octets") from None
            if exc.reason == "timeout":
                raise GbaError(
                    "gba.bsf_unreachable",
                    f"no answer from the BSF within {self.timeout_s:g} s",
                    url=self.bsf_url,
                ) from None
            raise GbaError(
                "gba.bsf_unreachable", f"BSF unreachable ({exc.reason}: {exc})", url=self.bsf_url
            ) from None
        return resp.status, resp.headers, resp.body

    # --- NAF keys -----------------------------------------------------------------------------
    async def ks_naf(self, naf_fqdn: str, ua_id: bytes = UA_KMS) -> tuple[str, Secret]:
        """(B-TID, Ks_NAF) for ``naf_fqdn`` and the Ua protocol ``ua_id``; bootstraps if needed.

        The Secret is the caller's to zeroize.
        """
        st = await self.bootstrap()
        nid = naf_id(naf_fqdn, ua_id)
        key = self._naf_keys.get(nid)
        if key is None:
            if st.gba_u:
                key = await self.card_ops.gba_naf_derive(nid, st.impi)
                if not isinstance(key, Secret):
                    key = Secret(key, "Ks_ext_NAF")
            else:
                assert st.ks is not None
                key = Secret(ks_naf(st.ks.reveal(), st.rand, st.impi, nid), "Ks_NAF")
            if self._state is not st:  # re-bootstrapped meanwhile: do not cache a stale key
                return st.btid, key
            self._naf_keys[nid] = key
        return st.btid, Secret(key.reveal(), "Ks_ext_NAF" if st.gba_u else "Ks_NAF")

    def _emit(self, info: dict) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event("bootstrap", info)
        except Exception:  # an event sink must not break bootstrapping
            log.exception("bootstrap event handler failed")
