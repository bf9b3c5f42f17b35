"""An AT port read on the agent's event loop (``AtPort(..., loop=loop)``, the [modem] watcher's
mode): URCs arrive in the loop's thread with no reader thread, commands from other threads
get their answers, and a modem that vanishes is no longer watched (a gone pty stays readable:
watching it would spin the loop) until it comes back.

The pty modem simulator stands in for the modem, opened by path with pyserial.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

pytest.importorskip("serial", reason="pyserial is not installed")

from ue_agent.drivers.at_modem import AtPort, enable_ims_reporting  # noqa: E402
from ue_agent.errors import TransportError  # noqa: E402
from ue_agent.modem_reports import urc_sink  # noqa: E402


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.01)


def _readers(path: str) -> list[str]:
    """Reader threads of the port at ``path`` (other tests' ports may have theirs)."""
    return [t.name for t in threading.enumerate() if t.name == f"at-reader:{path}"]


def test_urcs_reach_the_loop_thread_and_commands_come_from_others(modem_factory) -> None:
    sim = modem_factory("quectel-ec25")
    seen: list[tuple[str, int]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        own = threading.get_ident()
        port = await loop.run_in_executor(
            None,
            lambda: AtPort(
                str(sim.link_path),
                profile="quectel-ec25",
                on_urc=lambda line: seen.append((line, threading.get_ident())),
                timeout=5,
                loop=loop,
            ),
        )
        try:
            assert _readers(str(sim.link_path)) == []  # no reader thread: the loop reads the tty
            assert await loop.run_in_executor(None, enable_ims_reporting, port) == []
            assert (await loop.run_in_executor(None, port.command, "AT+CIREP?")).lines == ["+CIREP: 1,1"]
            assert sim.srvcc(0) and sim.srvcc(1)
            sim.emit_urc('+QIND: "csq",20,99')
            await _until(lambda: len(seen) >= 3)
            assert [line for line, _ in seen] == ["+CIREPH: 0", "+CIREPH: 1", '+QIND: "csq",20,99']
            assert {thread for _, thread in seen} == {own}
            # a command from the loop's own thread would wait for an answer only it can read
            with pytest.raises(RuntimeError, match="event loop"):
                port.command("AT")
        finally:
            await loop.run_in_executor(None, port.close)

    asyncio.run(main())


def test_a_vanished_modem_is_no_longer_watched_and_is_read_again_when_back(modem_factory) -> None:
    sim = modem_factory()
    seen: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        on_urc = urc_sink(loop, seen.append)  # the agent's own sink: in the loop, no hop
        port = await loop.run_in_executor(
            None, lambda: AtPort(str(sim.link_path), on_urc=on_urc, timeout=5, reopen_wait=0.5, loop=loop)
        )
        try:
            await loop.run_in_executor(None, enable_ims_reporting, port)
            fd = port._ser.fileno()
            generation = port.generation
            sim.vanish()  # the pty's other end closes: the tty reads EIO from now on
            await _until(lambda: not port.is_open)
            assert loop.remove_reader(fd) is False  # the loop stopped watching it at once
            cpu = time.thread_time()
            await asyncio.sleep(0.3)
            assert time.thread_time() - cpu < 0.05  # the loop idles: it does not spin on the EIO
            with pytest.raises(TransportError) as ei:  # gone, and the path too: modem.gone
                await loop.run_in_executor(None, lambda: port.command("AT", timeout=1))
            assert ei.value.code == "modem.gone"
            sim.start()  # back at the same path
            await loop.run_in_executor(None, port.settle)
            assert port.generation > generation and port.is_open
            await loop.run_in_executor(None, enable_ims_reporting, port)
            assert sim.srvcc(2)
            await _until(lambda: seen == [2])
        finally:
            await loop.run_in_executor(None, port.close)

    asyncio.run(main())


def test_closing_from_another_thread_stops_the_watch_before_the_fd_closes(modem_factory) -> None:
    sim = modem_factory()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        port = await loop.run_in_executor(None, lambda: AtPort(str(sim.link_path), timeout=5, loop=loop))
        fd = port._ser.fileno()
        await loop.run_in_executor(None, port.close)
        assert loop.remove_reader(fd) is False and not port.is_open
        with pytest.raises(TransportError) as ei:
            await loop.run_in_executor(None, port.command, "AT")
        assert ei.value.code == "modem.gone"

    asyncio.run(main())
