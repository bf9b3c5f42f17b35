"""The lab network: HSS + BSF on one listener, the KMS (a NAF) on another, as FQDNs are.

``LabNetwork(subscribers)`` serves, over aiohttp on loopback:
- the BSF (Ub at ``/``, TS 24.109) at :attr:`LabNetwork.bsf_url`;
- the KMS at :attr:`LabNetwork.kms_url`, built by ``ue_agent.lab.kms.create_kms_app(naf_auth,
  network)`` when that module exists (imported lazily; without it the KMS listener answers
  404 to everything).

Default FQDNs (lab PLMN 001/01): BSF ``bsf.ims.mnc001.mcc001.pub.3gppnetwork.org`` (TS 23.003
16.2: ``bsf.`` + the ISIM domain with ``.pub.`` inserted before ``3gppnetwork.org``), KMS
``kms.ims.mnc001.mcc001.3gppnetwork.org``. Listeners bind to addresses given separately,
since the lab has no DNS.

:attr:`LabNetwork.requests` counts requests per listener and :attr:`LabNetwork.answered`
lists the answers in the order they went out; :attr:`LabNetwork.faults`
(:class:`~ue_agent.lab.bsf.LabFaults`) makes the network misbehave for tests.
:class:`LabNetworkThread` runs a network on its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ue_agent.crypto.kdf import UA_KMS
from ue_agent.errors import ConfigError
from ue_agent.lab.bsf import Bsf, LabFaults
from ue_agent.lab.cdiv_as import LabCdivAs
from ue_agent.lab.hss import Hss
from ue_agent.lab.naf import NafAuth
from ue_agent.subscriber import Subscriber, load_subscriber

DEFAULT_BSF_FQDN = "bsf.ims.mnc001.mcc001.pub.3gppnetwork.org"
DEFAULT_KMS_FQDN = "kms.ims.mnc001.mcc001.3gppnetwork.org"

__all__ = ["DEFAULT_BSF_FQDN", "DEFAULT_KMS_FQDN", "LabFaults", "LabNetwork", "LabNetworkThread", "main"]


class LabNetwork:
    def __init__(
        self,
        subscribers: Iterable[Subscriber],
        bsf_addr: tuple[str, int] = ("127.0.0.1", 0),
        kms_addr: tuple[str, int] = ("127.0.0.1", 0),
        bsf_fqdn: str = DEFAULT_BSF_FQDN,
        kms_fqdn: str = DEFAULT_KMS_FQDN,
        lifetime_s: float = 3600,
        *,
        clock: Callable[[], float] = time.time,
        kms_engine: Any = None,
        focus: Subscriber | None = None,
    ) -> None:
        self.subscribers = list(subscribers)
        #: the conference focus's subscriber (lab/focus.py): served on its own listener
        self.focus_subscriber = focus
        self.focus: Any = None
        if focus is not None and focus not in self.subscribers:
            self.subscribers.append(focus)
        #: a KmsEngine (``handle(bytes) -> bytes``) to run behind the KMS front instead of the lab's
        self.kms_engine = kms_engine
        self.bsf_addr = bsf_addr
        self.kms_addr = kms_addr
        self.bsf_fqdn = bsf_fqdn.lower()
        self.kms_fqdn = kms_fqdn.lower()
        self.clock = clock
        self.faults = LabFaults()
        self.hss = Hss(self.subscribers)
        self.bsf = Bsf(self.hss, self.bsf_fqdn, lifetime_s, faults=self.faults, clock=clock)
        self.naf_auth = NafAuth(self.bsf, self.kms_fqdn, UA_KMS, clock=clock)
        #: the lab CDIV AS the lab KMS asks about diverted calls (TR 33.829 9.2)
        self.cdiv_as = LabCdivAs(clock=clock)
        #: requests seen per listener ("bsf", "kms"), faults included
        self.requests: dict[str, int] = {"bsf": 0, "kms": 0, **({"focus": 0} if focus is not None else {})}
        #: (listener, HTTP status) of each answer, in the order they were sent
        self.answered: list[tuple[str, int]] = []
        self.kms_app_loaded = False
        #: the :class:`LabNetworkThread` running this network, when one does
        self.thread: LabNetworkThread | None = None
        self._runners: list = []
        self._urls: dict[str, str] = {}

    @property
    def bsf_url(self) -> str:
        """``http://host:port/`` (the Ub Request-URI is ``/``)."""
        return self._url("bsf") + "/"

    @property
    def kms_url(self) -> str:
        """``http://host:port`` (no trailing slash; the KMS adds its paths)."""
        return self._url("kms")

    def _url(self, name: str) -> str:
        try:
            return self._urls[name]
        except KeyError:
            raise RuntimeError("LabNetwork is not started") from None

    def _counter(self, name: str):
        from aiohttp import web

        down_attr, status_attr, delay_attr = f"{name}_down", f"{name}_status", f"{name}_delay_s"

        @web.middleware
        async def count(request, handler):
            self.requests[name] += 1
            if getattr(self.faults, down_attr, False):
                # a dead peer: the connection closes without an answer
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            delay = getattr(self.faults, delay_attr, 0.0)
            if delay:
                await asyncio.sleep(delay)
            status = getattr(self.faults, status_attr, None) if name == "kms" else None
            if status is not None:
                resp = web.Response(status=status, text="lab fault: KMS error\n")
            else:
                try:
                    resp = await handler(request)
                except web.HTTPException as exc:
                    self.answered.append((name, exc.status))
                    raise
            self.answered.append((name, resp.status))
            return resp

        return count

    @property
    def focus_url(self) -> str:
        """``http://host:port`` of the conference focus (lab/focus.py), when the network has one."""
        return self._url("focus")

    def _kms_app(self):
        from aiohttp import web

        try:
            from ue_agent.lab.kms import create_kms_app
        except ModuleNotFoundError as exc:
            if exc.name != "ue_agent.lab.kms":
                raise
            return web.Application()
        self.kms_app_loaded = True
        return create_kms_app(self.naf_auth, self, engine=self.kms_engine)

    async def start(self) -> None:

        if self._runners:
            raise RuntimeError("LabNetwork already started")
        bsf_app = self.bsf.create_app()
        kms_app = self._kms_app()
        try:
            await self._serve("bsf", bsf_app, *self.bsf_addr)
            await self._serve("kms", kms_app, *self.kms_addr)
            if self.focus_subscriber is not None:
                from ue_agent.lab.focus import start_focus

                self.focus, focus_app = await start_focus(self, self.focus_subscriber)
                await self._serve("focus", focus_app, "127.0.0.1", 0)
        except OSError as exc:
            await self.stop()
            raise ConfigError("config.invalid", f"lab network cannot listen: {exc.strerror}") from None

    async def _serve(self, name: str, app: Any, host: str, port: int) -> None:
        """``app`` (its requests counted as ``name``) on ``host:port``; its URL is ``_urls[name]``."""
        from aiohttp import web

        app.middlewares.insert(0, self._counter(name))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = runner.addresses[0]
        self._urls[name] = f"http://{_host(bound[0])}:{bound[1]}"

    async def stop(self) -> None:
        if self.focus is not None:
            await self.focus.aclose()
            self.focus = None
        runners, self._runners = self._runners, []
        for runner in reversed(runners):
            await runner.cleanup()
        self._urls.clear()

    async def __aenter__(self) -> LabNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


class LabNetworkThread:
    """A :class:`LabNetwork` on its own event loop in a daemon thread (tests, the demo).

    ``with LabNetworkThread(net) as net: ...``; :meth:`call` runs a coroutine on its loop.
    """

    def __init__(self, network: LabNetwork) -> None:
        self.network = network
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="lab-network", daemon=True)

    def start(self) -> LabNetwork:
        self.network.thread = self
        self._thread.start()
        self.call(self.network.start())
        return self.network

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.network.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self.loop.close()

    def __enter__(self) -> LabNetwork:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _addr(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("config.invalid", f"--{what}: expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(args) -> int:
    """``ue-agent lab network --subscribers F... [--bsf H:P] [--kms H:P] [--mailbox H:P] [--focus F]``."""
    subs = [load_subscriber(p) for p in args.subscribers]
    focus = load_subscriber(args.focus) if getattr(args, "focus", None) else None
    mailbox = getattr(args, "mailbox", None)
    box_addr = _addr(mailbox, "mailbox") if mailbox else None
    box_sub = None
    if box_addr is not None:  # the lab mailbox, a subscriber of its own (ue_agent/lab/mailbox.py)
        from pathlib import Path

        box_sub = load_subscriber(Path(__file__).parent / "subscribers" / "mailbox.toml")
        subs = [s for s in subs if s.impi != box_sub.impi] + [box_sub]
    net = LabNetwork(subs, bsf_addr=_addr(args.bsf, "bsf"), kms_addr=_addr(args.kms, "kms"), focus=focus)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        async with net:
            print(f"BSF {net.bsf_fqdn} at {net.bsf_url}", flush=True)
            kms_note = "" if net.kms_app_loaded else " (no KMS app installed: 404 only)"
            print(f"KMS {net.kms_fqdn} at {net.kms_url}{kms_note}", flush=True)
            print(f"subscribers: {', '.join(s.impi for s in subs)}", flush=True)
            if focus is not None:
                print(f"focus {', '.join(focus.impu)} at {net.focus_url}", flush=True)
            if box_sub is None:
                await stop.wait()
                return
            from ue_agent.lab.mailbox import MailboxServer

            async with MailboxServer(net, box_sub, box_addr or ("127.0.0.1", 0)) as box:
                print(f"MAILBOX {box_sub.impu[0]} at {box.url}", flush=True)
                await stop.wait()

    asyncio.run(run())
    sys.stdout.flush()
    return 0
