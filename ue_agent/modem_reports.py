"""The modem's SRVCC reports: enable ``+CIREP`` and feed ``+CIREPH`` values to the agent.

When the card itself is reached over the same AT port, the URC lines arrive through the
card transport (``open_transport(..., on_urc=...)``) and :func:`urc_sink` is the callback;
otherwise :class:`ModemUrcWatcher` opens the [modem] port on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ue_agent.handover.state import parse_cireph

log = logging.getLogger(__name__)


def urc_sink(loop: asyncio.AbstractEventLoop, on_cireph: Callable[[int], None]) -> Callable[[str], None]:
    """A thread-safe ``on_urc(line)`` callback that hands +CIREPH values to the event loop."""

    def on_urc(line: str) -> None:
        value = parse_cireph(line)
        if value is not None:
            loop.call_soon_threadsafe(on_cireph, value)

    return on_urc


class ModemUrcWatcher:
    """Opens the modem's AT port (pyserial, its own thread) only for URCs."""

    def __init__(self, port: str, on_cireph: Callable[[int], None], profile: str | None = None) -> None:
        self.port = port
        self.on_cireph = on_cireph
        self.profile = profile
        self._at = None

    async def start(self) -> None:
        from ue_agent.drivers.at_modem import AtPort, enable_ims_reporting

        loop = asyncio.get_running_loop()
        sink = urc_sink(loop, self.on_cireph)
        at = await loop.run_in_executor(None, lambda: AtPort(self.port, profile=self.profile, on_urc=sink))
        self._at = at
        refused = await loop.run_in_executor(None, enable_ims_reporting, at)
        if refused:
            log.warning("modem %s refused %s: no SRVCC reports", self.port, ", ".join(refused))
        else:
            log.info("modem %s: SRVCC reporting on", self.port)

    async def stop(self) -> None:
        if self._at is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._at.close)
            self._at = None
