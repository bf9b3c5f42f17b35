"""A soft UICC served to pcscd's vpcd virtual reader, so pyscard -> pcscd -> vpcd reaches it
like a card in a real reader.

The card side is a TCP *client*: pcscd's vpcd driver listens on a port per reader (see the
reader config in docs/hardware.md) and a card "is inserted" while a client is connected.
Every message is a 2-byte big-endian length and a body. A one-byte body is a control
message: 0 power off, 1 power on, 2 reset (no reply to any of the three) and 4 get ATR
(reply: the ATR). A longer body is a command APDU, answered with ``data || SW1 SW2``.

vpcd writes the length and the body in two segments and then waits for our answer; with
delayed ACKs on, each APDU costs ~40 ms. So the socket has TCP_NODELAY and TCP_QUICKACK is
set again after every recv (Linux clears it).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ue_agent.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_PORT = 35963  # vpcd's default, 0x8C7B

CTRL_POWER_OFF = 0
CTRL_POWER_ON = 1
CTRL_RESET = 2
CTRL_GET_ATR = 4

#: the largest message vpcd sends (extended APDU: 4 + 3 + 65535 + 3) fits the 2-byte length
_MAX_MESSAGE = 0xFFFF


class UiccLike(Protocol):
    """What the server needs from a card (``ue_agent.lab.uicc.SoftUicc``)."""

    @property
    def atr(self) -> bytes: ...

    def process(self, apdu: bytes) -> bytes: ...

    def reset(self) -> bytes: ...


class _LinkDropped(Exception):
    """The TCP link to vpcd ended (peer closed, reset, or we dropped it)."""


def parse_hostport(value: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """'HOST:PORT', 'HOST' or '[v6]:PORT' -> (host, port); a clear ConfigError otherwise."""
    text = value.strip()
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError("config.invalid", f"bad HOST:PORT {value!r}: unclosed '['", value=value)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError("config.invalid", f"bad HOST:PORT {value!r}", value=value)
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    if not host:
        raise ConfigError("config.invalid", f"bad HOST:PORT {value!r}: empty host", value=value)
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError("config.invalid", f"bad HOST:PORT {value!r}: port must be 1-65535", value=value)
    return host, int(port_text)


class VpcdCard:
    """Serves ``uicc`` to the vpcd reader at ``host:port`` from a background thread.

    The card is "inserted" while connected. :meth:`remove` drops the link and stays out;
    :meth:`insert` lets it connect again. When pcscd goes away the server keeps trying to
    reconnect every ``retry_s`` seconds, so a restarted pcscd finds the card again.
    :meth:`remove_on_apdu` arms a fault: the link is dropped when a matching APDU arrives,
    before it is answered (a card pulled in the middle of a command).

    pcscd learns of a vpcd card coming and going by polling (every 400 ms), so a removed
    card stays out at least ``min_out_s``: pulled and reinserted faster, pcscd would see
    neither event and keep talking to a card that has in fact been reset. A link on which
    pcscd has not powered the card on ``hello_s`` after connecting (it missed the
    insertion) is dropped and made again.
    """

    def __init__(
        self,
        uicc: UiccLike,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        retry_s: float = 0.2,
        connect_timeout_s: float = 2.0,
        min_out_s: float = 1.0,
        hello_s: float = 2.0,
    ) -> None:
        self.uicc = uicc
        self.host = host
        self.port = port
        self.retry_s = retry_s
        self.connect_timeout_s = connect_timeout_s
        self.min_out_s = min_out_s
        self.hello_s = hello_s
        self._out_since: float | None = None
        #: set while a link to vpcd is up (the card is in the reader)
        self.connected = threading.Event()
        #: count of links made so far (tests wait for "the next" connection)
        self.connections = 0
        self.apdus = 0
        self._lock = threading.RLock()  # re-entered from the signal handler in main()
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._inserted = threading.Event()
        self._inserted.set()
        self._wake = threading.Event()
        self._fault: Callable[[bytes], bool] | None = None
        self._thread: threading.Thread | None = None

    # -- control ------------------------------------------------------------------------

    def start(self) -> VpcdCard:
        if self._thread is not None:
            raise RuntimeError("VpcdCard already started")
        self._thread = threading.Thread(target=self.serve_forever, name=f"vpcd-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Drop the link and end the thread. Idempotent."""
        self._stop.set()
        self._wake.set()
        self._drop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def remove(self) -> None:
        """Pull the card: drop the link and do not reconnect until :meth:`insert`."""
        self._out_since = time.monotonic()
        self._inserted.clear()
        self._drop()

    def insert(self) -> None:
        """Put the card back: connect again (once it has been out ``min_out_s``)."""
        if getattr(self.uicc, "removed", False):
            self.uicc.insert()  # type: ignore[attr-defined]
        self._inserted.set()
        self._wake.set()

    def remove_on_apdu(self, match: Callable[[bytes], bool] | None) -> None:
        """Pull the card when an APDU for which ``match`` is true arrives (not answered).

        One shot: it disarms itself when it fires. ``None`` disarms it.
        """
        with self._lock:
            self._fault = match

    @property
    def running(self) -> bool:
        """The serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def __enter__(self) -> VpcdCard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -----------------------------------------------------------------------

    def serve_forever(self) -> None:
        """Connect, serve until the link ends, reconnect; until :meth:`stop`."""
        down_logged = False
        while not self._stop.is_set():
            if not self._inserted.is_set():
                self._wake.wait(self.retry_s)
                self._wake.clear()
                continue
            if self._out_since is not None:
                left = self._out_since + self.min_out_s - time.monotonic()
                if left > 0:
                    self._stop.wait(left)
                    continue
                self._out_since = None
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
            except OSError as exc:
                if not down_logged:
                    log.info("vpcd %s:%d not reachable (%s); retrying", self.host, self.port, exc)
                    down_logged = True
                self._wake.wait(self.retry_s)
                self._wake.clear()
                continue
            down_logged = False
            # pcscd asks a card it has noticed for its ATR at once (and every 400 ms after):
            # silence means it missed the insertion, so go out and come back in
            sock.settimeout(self.hello_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set() or not self._inserted.is_set():
                    sock.close()
                    continue
                self._sock = sock
            self.uicc.reset()  # a freshly inserted card starts from its ATR state
            self.connections += 1
            self.connected.set()
            log.info("card connected to vpcd %s:%d", self.host, self.port)
            reason = "closed"
            try:
                self._serve(sock)
            except _LinkDropped as exc:
                reason = str(exc) or "closed"
            except OSError as exc:
                reason = f"socket error: {exc}"
            finally:
                self.connected.clear()
                self._drop()
            if self._stop.is_set():
                reason = "stopped"
            elif not self._inserted.is_set():
                reason = "card removed"
            log.info("card disconnected from vpcd %s:%d (%s)", self.host, self.port, reason)

    def _serve(self, sock: socket.socket) -> None:
        # pcscd powers a card on as soon as it notices it. A link that only ever sees
        # GET ATR polls means pcscd has the reader stuck "empty" (it can happen when a card
        # comes back while pcscd is still failing to reset the one pulled before): go out
        # long enough for its poll to see the slot empty, then come back.
        deadline = time.monotonic() + self.hello_s
        powered = False
        while True:
            if not powered:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                header = self._recv_exact(sock, 2)
            except TimeoutError:
                with self._lock:
                    self._out_since = time.monotonic()
                raise _LinkDropped(
                    f"pcscd did not power the card on within {self.hello_s:g} s; reinserting"
                ) from None
            sock.settimeout(None)
            (length,) = struct.unpack(">H", header)
            if length == 0:
                raise _LinkDropped("zero-length message from vpcd")
            body = self._recv_exact(sock, length)
            if length == 1:
                powered = powered or body[0] in (CTRL_POWER_ON, CTRL_RESET)
                reply = self._control(body[0])
            else:
                with self._lock:
                    fault = self._fault
                    if fault is not None and fault(body):
                        self._fault = None
                        self._out_since = time.monotonic()
                        self._inserted.clear()
                        raise _LinkDropped("card pulled during a command (fault injected)")
                powered = True
                self.apdus += 1
                reply = self.uicc.process(body)
                if not reply:
                    # SoftUicc answers b"" when pulled (drop the link) or mute (stay silent:
                    # vpcd, and the PC/SC caller, wait for an answer that never comes)
                    if getattr(self.uicc, "removed", False):
                        with self._lock:
                            self._out_since = time.monotonic()
                            self._inserted.clear()
                        raise _LinkDropped("card pulled (SoftUicc.remove)")
                    continue
            if reply is not None:
                if len(reply) > _MAX_MESSAGE:
                    raise _LinkDropped(f"card answer of {len(reply)} bytes does not fit vpcd framing")
                sock.sendall(struct.pack(">H", len(reply)) + reply)

    def _control(self, code: int) -> bytes | None:
        if code == CTRL_GET_ATR:
            return bytes(self.uicc.atr)
        if code in (CTRL_POWER_ON, CTRL_RESET):
            self.uicc.reset()
            return None
        if code == CTRL_POWER_OFF:
            return None
        log.warning("vpcd sent unknown control byte 0x%02x; ignored", code)
        return None

    @staticmethod
    def _recv_exact(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            # Linux turns quick ACK off again after it fires: re-arm it on every recv.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass
            if not chunk:
                raise _LinkDropped("vpcd closed the link")
            buf += chunk
        return bytes(buf)

    def _drop(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def main(args: argparse.Namespace) -> int:
    """``ue-agent lab uicc --subscriber FILE --vpcd HOST:PORT``: serve until SIGTERM/SIGINT."""
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    host, port = parse_hostport(args.vpcd)
    subscriber = load_subscriber(args.subscriber)
    # connect/disconnect lines are this command's output, even without -v
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    card = VpcdCard(SoftUicc(subscriber), host, port)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        card.stop(timeout=0)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("serving %s on vpcd %s:%d", subscriber.impi, host, port)
    try:
        card.serve_forever()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    return 0
