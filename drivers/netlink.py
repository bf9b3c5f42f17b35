"""Netlink (pyroute2): link and address changes on the interfaces IMS media runs over.

An address that goes away or a link that goes down under a call is IP mobility: the
handover logic (:mod:`ue_agent.handover`) decides what it means for the media keys. This
module only watches and reports. pyroute2 costs ~13 MB and ~0.2 s to import, so it is
imported when a monitor starts, never at daemon start-up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkChange:
    ifname: str
    up: bool
    operstate: str


@dataclass(frozen=True)
class AddressChange:
    ifname: str
    address: str
    prefixlen: int
    added: bool


NetEvent = LinkChange | AddressChange


class NetlinkMonitor:
    """Reports link and address changes on ``interfaces`` (all when empty) to ``on_event``.

    ``netns`` names a network namespace (tests make their own); None is the agent's own.
    """

    def __init__(
        self,
        interfaces: Iterable[str],
        on_event: Callable[[NetEvent], None],
        netns: str | None = None,
    ) -> None:
        self.interfaces = frozenset(interfaces)
        self.on_event = on_event
        self.netns = netns
        self._names: dict[int, str] = {}
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()

    def _wanted(self, name: str | None) -> bool:
        return bool(name) and (not self.interfaces or name in self.interfaces)

    def interpret(self, msg) -> NetEvent | None:
        """One rtnetlink message -> an event for a watched interface, or None."""
        event = msg.get("event")
        index = msg.get("index")
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            name = msg.get_attr("IFLA_IFNAME") or self._names.get(index)
            if name is None:
                return None
            if event == "RTM_DELLINK":
                self._names.pop(index, None)
                return LinkChange(name, False, "GONE") if self._wanted(name) else None
            self._names[index] = name
            state = msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"
            return LinkChange(name, state in ("UP", "UNKNOWN"), state) if self._wanted(name) else None
        if event in ("RTM_NEWADDR", "RTM_DELADDR"):
            name = self._names.get(index) or msg.get_attr("IFA_LABEL")
            address = msg.get_attr("IFA_ADDRESS")
            if not self._wanted(name) or address is None:
                return None
            return AddressChange(name, address, int(msg.get("prefixlen", 0)), event == "RTM_NEWADDR")
        return None

    async def run(self) -> None:
        from pyroute2 import AsyncIPRoute  # heavy: only when a monitor runs

        ipr = AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()
        try:
            await ipr.bind()
            async for link in await ipr.link("dump"):
                self._names[link.get("index")] = link.get_attr("IFLA_IFNAME")
            self._ready.set()
            while True:
                async for msg in ipr.get():
                    ev = self.interpret(msg)
                    if ev is not None:
                        log.info("netlink: %s", ev)
                        self.on_event(ev)
        finally:
            ipr.close()

    def start(self) -> asyncio.Task:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="netlink-monitor")
        return self._task

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
