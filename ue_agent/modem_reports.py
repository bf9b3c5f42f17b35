"""The modem's SRVCC reports: enable ``+CIREP`` and feed ``+CIREPH`` values to the agent.

When the card itself is reached over the same AT port, the URC lines arrive through the
card transport (``open_transport(..., on_urc=...)``) and :func:`urc_sink` is the callback;
otherwise :class:`ModemUrcWatcher` opens the [modem] port on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from ue_agent.handover.state import parse_cireph

if TYPE_CHECKING:
    from ue_agent.drivers.at_modem import AtPort

log = logging.getLogger(__name__)


def urc_sink(loop: asyncio.AbstractEventLoop, on_cireph: Callable[[int], None]) -> Callable[[str], None]:
    """A thread-safe ``on_urc(line)`` callback that hands +CIREPH values to the event loop:
    at once when it is called in the loop's thread (an AT port read on the loop), else
    through :meth:`loop.call_soon_threadsafe` (a reader thread)."""

    def on_urc(line: str) -> None:
        value = parse_cireph(line)
        if value is None:
            return
        if asyncio._get_running_loop() is loop:  # the port is read on the loop (AtPort loop=)
            on_cireph(value)  # an exception: logged by the port, which reads on
        else:
            loop.call_soon_threadsafe(on_cireph, value)

    return on_urc


class ModemUrcWatcher:
    """Opens the modem's AT port (pyserial, read on the event loop) only for URCs."""

    def __init__(self, port: str, on_cireph: Callable[[int], None], profile: str | None = None) -> None:
        self.port = port
        self.on_cireph = on_cireph
        self.profile = profile
        self._at = None

    async def start(self) -> None:
        from ue_agent.drivers.at_modem import AtPort, enable_ims_reporting

        loop = asyncio.get_running_loop()
        sink = urc_sink(loop, self.on_cireph)
        # read on the loop: a URC reaches the handover tracker with no hop between threads
        at = await loop.run_in_executor(
            None, lambda: AtPort(self.port, profile=self.profile, on_urc=sink, loop=loop)
        )
        self._at = at
        # a modem reset clears +CIREP: set the port up again at once (it sends the reporting
        # commands enable_ims_reporting() keeps in at.after_setup), in the executor: the
        # listener runs where the port is read (this loop), which must not wait on a command
        at.reset_listeners.append(lambda why: loop.call_soon_threadsafe(self._after_reset, at))
        refused = await loop.run_in_executor(None, enable_ims_reporting, at)
        if refused:
            log.warning("modem %s refused %s: no SRVCC reports", self.port, ", ".join(refused))
        else:
            log.info("modem %s: SRVCC reporting on", self.port)

    def _after_reset(self, at: AtPort) -> None:
        def settle() -> None:
            try:
                at.settle()
                log.info("modem %s: set up again after a reset (SRVCC reporting on)", self.port)
            except Exception as exc:  # noqa: BLE001 - logged; the next reset tries again
                why = getattr(exc, "code", type(exc).__name__)
                log.warning("modem %s: set-up after a reset failed (%s)", self.port, why)

        if self._at is at:
            asyncio.get_running_loop().run_in_executor(None, settle)

    async def stop(self) -> None:
        if self._at is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._at.close)
            self._at = None
