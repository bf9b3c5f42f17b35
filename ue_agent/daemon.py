"""``ue-agent run``: the daemon, in the foreground, as systemd runs it.

Start-up: read the config (a bad one fails here, exit 1, nothing listening), open the
card in its worker thread, take the socket systemd passed (LISTEN_FDS) or bind [api]
socket, start the modem URC and netlink watchers when configured, then tell systemd
READY=1. SIGHUP re-reads the config (an invalid one is logged and the old one kept);
SIGTERM/SIGINT stop: the socket closes, every key is zeroized, and the count is logged.
Heavy modules (pyscard, pyserial, pyroute2, the network side) are imported only by the
parts that use them, so an idle agent stays small; the media key store is built with the
first session.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

from ue_agent.agent import Agent
from ue_agent.api.server import ApiServer, activated_socket
from ue_agent.config import Config, load_config
from ue_agent.errors import AgentError, ConfigError
from ue_agent.hardening import harden

log = logging.getLogger("ue_agent.daemon")


class Watcher(Protocol):
    """A modem URC or netlink watcher the daemon started and stops."""

    async def stop(self) -> None: ...


class SdNotify:
    """sd_notify(3) over $NOTIFY_SOCKET (AF_UNIX datagrams; '@' = abstract namespace)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        if path:
            addr = "\0" + path[1:] if path.startswith("@") else path
            self._addr: str = addr
            # non-blocking: a receiver that stops reading must not freeze the event loop; a
            # datagram it has no room for is dropped (and logged), as sd_notify(3) would fail
            self._sock = socket.socket(
                socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
            )

    @classmethod
    def from_env(cls) -> SdNotify:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *fields: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self._addr)
        except OSError as exc:
            # BlockingIOError: the receiver's queue is full (it stopped reading); dropped
            level = logging.DEBUG if fields == ("WATCHDOG=1",) else logging.WARNING
            log.log(level, "sd_notify %s not sent: %s", fields[0], exc.strerror or type(exc).__name__)

    def watchdog_interval(self) -> float | None:
        """Half of WATCHDOG_USEC in seconds, when the watchdog is meant for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            value = int(usec)
        except ValueError:
            return None
        return value / 2e6 if value > 0 else None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def setup_logging(level: str, verbose: int = 0) -> None:
    lvl = logging.DEBUG if verbose >= 2 else getattr(logging, level.upper())
    logging.getLogger().setLevel(lvl)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=lvl, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Daemon:
    def __init__(self, cfg: Config, config_path: str, verbose: int = 0) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.verbose = verbose
        self.notify = SdNotify.from_env()
        self.server: ApiServer | None = None
        self.agent = Agent(cfg, self._emit)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._watchers: list[Watcher] = []
        #: called once the daemon is ready (after READY=1)
        self.on_ready: Callable[[], None] | None = None

    def _emit(self, name: str, body: dict[str, Any]) -> None:
        """An event to the subscribers allowed to see it: one about a session goes to the
        session's owner (naming it by the owner's id) and root (which sees another uid's
        session as ``uid/id``); a handover event lists to each uid only its own sessions
        (root: all); anything else (card, bootstrap) goes to every subscriber."""
        # handover events are the hot path of a call (a URC each): at debug only
        (log.debug if name == "handover" else log.info)(
            "event %s %s", name, body.get("kind", body.get("present", ""))
        )
        server = self.server
        if server is None:
            return
        from ue_agent.media.sessions import unscoped

        if "session" in body:
            # the body names the session by its key (owner uid / id, ue_agent.media.sessions)
            key = body["session"]
            owner, sid = unscoped(key) if isinstance(key, str) else (None, key)
            if owner is None:  # not a session the registry keyed: root only
                server.broadcast(name, body, uids={0})
                return
            server.broadcast(name, {**body, "session": sid}, uids={owner})
            if owner != 0:  # root sees it too, named with its owner's uid
                server.broadcast(name, body, uids={0})
            return
        sessions = body.get("sessions")
        if isinstance(sessions, dict) and sessions:
            by_uid: dict[int, dict[str, Any]] = {}
            everyone: dict[str, Any] = {}  # root's view: its own ids, others' as uid/id
            for key, state in sessions.items():
                owner, sid = unscoped(key)
                if owner is not None:
                    by_uid.setdefault(owner, {})[sid] = state
                everyone[sid if owner == 0 else key] = state
            for uid in server.uids():
                part = everyone if uid == 0 else by_uid.get(uid, {})
                server.broadcast(name, {**body, "sessions": part}, uids={uid})
            return
        server.broadcast(name, body)

    async def run(self, *, own_process: bool = True) -> int:
        """Serve until SIGTERM/SIGINT (or :meth:`request_stop`). ``own_process=False``: the
        process is someone else's (the in-process test daemon, its loop outside the main
        thread): no signal handlers, no process-wide tuning of the garbage collector."""
        loop = asyncio.get_running_loop()
        if own_process:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.agent.start()
        self.server = ApiServer(self.cfg.api, self.agent.handle)
        self.server.on_close = self.agent.connection_closed
        self.server.holds = self.agent.holds_offers
        server = self.server
        self.agent.extra_status.append(lambda: {"api": {"clients": server.clients}})
        try:
            sock = activated_socket()
            await self.server.start(sock)
        except AgentError as exc:
            log.error("%s: %s", exc.code, exc.message)
            print(f"ue-agent: error: {exc.code}: {exc.message}", file=sys.stderr)
            await self.agent.stop()
            return 1
        where = "socket activation" if sock is not None else self.cfg.api.socket
        await self._start_watchers()
        interval = self.notify.watchdog_interval()
        if interval:
            self._tasks.append(asyncio.create_task(self._watchdog(interval)))
        log.info("ready: listening on %s", where)  # logged first: whoever saw READY=1 finds it
        self.notify.send("READY=1", f"STATUS={self._status_line()}", f"MAINPID={os.getpid()}")
        from ue_agent import warmup

        # after the warm-up's imports, so the event loop never imports them itself
        at_start = self.cfg.network.bootstrap == "at-start" and self.cfg.network.kms_url
        # the first call's modules, in the background (docs/performance.md)
        then = self.agent.bootstrap_at_start if at_start else None
        warmup.start(self.cfg, then, loop, freeze=own_process)
        if self.on_ready is not None:
            self.on_ready()
        await self._stop.wait()
        return await self.shutdown()

    def request_stop(self) -> None:
        """Stop as SIGTERM does (call from the daemon's event loop)."""
        self._stop.set()

    def _status_line(self) -> str:
        st = self.agent.card.state
        card = "card present" if st.get("present") else f"no card ({st.get('error') or 'not opened'})"
        return f"{card}; {self.server.clients if self.server else 0} clients"

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notify.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def _start_watchers(self) -> None:
        shared = self.cfg.card.transport == "at" and self.cfg.modem.port == self.cfg.card.port
        if self.cfg.modem.port and not shared:  # shared: URCs come through the card transport
            from ue_agent.modem_reports import ModemUrcWatcher

            watcher = ModemUrcWatcher(self.cfg.modem.port, self.agent.on_cireph)
            try:
                await watcher.start()
                self._watchers.append(watcher)
            except AgentError as exc:
                log.error("modem %s: %s (handover reports off)", self.cfg.modem.port, exc.code)
        if self.cfg.netlink.enabled:
            from ue_agent.drivers.netlink import NetlinkMonitor

            mon = NetlinkMonitor(self.cfg.netlink.interfaces, self.agent.on_net_event)
            mon.start()
            self._watchers.append(mon)

    def reload(self) -> None:
        self.notify.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            cfg = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s: %s", exc.code, exc.message)
            self.notify.send("READY=1", f"STATUS=reload refused: {exc.code}; running config kept")
            return
        changed = [s for s in ("card", "modem", "netlink") if getattr(cfg, s) != getattr(self.cfg, s)]
        if cfg.api.socket != self.cfg.api.socket:
            changed.append("api.socket")
        cfg.card, cfg.modem, cfg.netlink = self.cfg.card, self.cfg.modem, self.cfg.netlink
        cfg.api.socket = self.cfg.api.socket
        old, self.cfg = self.cfg, cfg
        setup_logging(cfg.log.level, self.verbose)
        self.agent.reconfigure(cfg)
        if self.server is not None:
            self.server.reconfigure(cfg.api)
        if changed:
            log.warning("reloaded; these need a restart to change: %s", ", ".join(changed))
        if cfg.network != old.network:
            log.info("reloaded [network]: applied (the next MIKEY request uses the new URLs)")
        log.info("config reloaded from %s", self.config_path)
        self.notify.send("READY=1", f"STATUS=reloaded; {self._status_line()}")

    async def shutdown(self) -> int:
        self.notify.send("STOPPING=1", "STATUS=stopping")
        log.info("stopping")
        for t in self._tasks:
            t.cancel()
        for w in self._watchers:
            with contextlib.suppress(Exception):
                await w.stop()
        if self.server is not None:
            self.server.on_close = None  # the offers stay for agent.stop to zeroize and count
            await self.server.close()
        zeroized, left = await self.agent.stop()
        log.info("stopped: %d keys zeroized, %d left", zeroized, left)
        self.notify.close()
        return 0 if left == 0 else 1


def main(args: argparse.Namespace) -> int:
    # before the config or any key is read: not dumpable, memory locked where allowed
    hardened = harden()
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"ue-agent: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    setup_logging(cfg.log.level, getattr(args, "verbose", 0))
    log.info("process: dumpable=%s, memory lock: %s", hardened["dumpable"], hardened["memory_lock"])
    daemon = Daemon(cfg, args.config, getattr(args, "verbose", 0))
    return asyncio.run(daemon.run())
