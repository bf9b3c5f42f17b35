"""PC/SC readers through pcscd (pyscard's low-level ``smartcard.scard`` API).

:class:`PcscTransport` carries APDUs to the UICC in one reader:

- the reader is the first whose name contains ``reader`` (case-insensitive) and holds a
  card, else the first whose name contains it; "" matches every reader;
- the card is held with SCARD_SHARE_EXCLUSIVE by default, so no other process can slip
  commands in between our SELECT and AUTHENTICATE;
- the protocol is the card's default from its ATR (the first T=0/T=1 it offers) rather
  than pcscd's automatic choice, which is unreliable on some platforms (osmocom #6952);
- every PC/SC call runs on one worker thread and the caller waits at most ``wait_s``:
  neither pcscd nor vpcd bound a command to a mute card, the driver does;
- a card pulled in the middle of a command is ``card.removed`` and the command is never
  repeated: AUTHENTICATE is not idempotent (the card's SQN moves on). After a removal,
  the next :meth:`PcscTransport.transmit` (or :meth:`PcscTransport.wait_for_card`)
  connects to whatever card is in the reader then; the caller re-selects its application;
- ``on_card_event(present, reader)`` is called from a monitor thread when a card comes
  or goes (SCardGetStatusChange), also across a pcscd restart.

pyscard is imported when a transport first touches PC/SC, never at agent start-up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType
from typing import Any

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import CardError, TransportError

log = logging.getLogger(__name__)

CardEventCallback = Callable[[bool, str], None]

# PC/SC return codes (winscard / pcsc-lite), used without importing pyscard.
SCARD_S_SUCCESS = 0x00000000
SCARD_E_CANCELLED = 0x80100002
SCARD_E_INVALID_HANDLE = 0x80100003
SCARD_E_UNKNOWN_READER = 0x80100009
SCARD_E_TIMEOUT = 0x8010000A
SCARD_E_SHARING_VIOLATION = 0x8010000B
SCARD_E_NO_SMARTCARD = 0x8010000C
SCARD_E_PROTO_MISMATCH = 0x8010000F
SCARD_F_COMM_ERROR = 0x80100013
SCARD_E_NOT_TRANSACTED = 0x80100016
SCARD_E_READER_UNAVAILABLE = 0x80100017
SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_SERVICE_STOPPED = 0x8010001E
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E
SCARD_W_UNRESPONSIVE_CARD = 0x80100066
SCARD_W_UNPOWERED_CARD = 0x80100067
SCARD_W_RESET_CARD = 0x80100068
SCARD_W_REMOVED_CARD = 0x80100069

_NO_SERVICE = {SCARD_E_NO_SERVICE, SCARD_E_SERVICE_STOPPED}
_READER_GONE = {SCARD_E_UNKNOWN_READER, SCARD_E_READER_UNAVAILABLE}
#: the command may have reached the card and been cut off: find out whether the card left
_INTERRUPTED = {SCARD_E_NOT_TRANSACTED, SCARD_W_UNRESPONSIVE_CARD, SCARD_W_UNPOWERED_CARD, SCARD_F_COMM_ERROR}

# reader states (SCARD_STATE_*)
_STATE_UNAWARE = 0x0000
_STATE_CHANGED = 0x0002
_STATE_UNKNOWN = 0x0004
_STATE_UNAVAILABLE = 0x0008
_STATE_PRESENT = 0x0020
_STATE_MUTE = 0x0200

_PROTOCOL_T0 = 0x0001
_PROTOCOL_T1 = 0x0002
_SHARE_EXCLUSIVE = 1
_SHARE_SHARED = 2
_LEAVE_CARD = 0
_RESET_CARD = 1
_SCOPE_USER = 0

#: the longest command APDU: extended length, 65535 bytes of data and a 3-byte Le
MAX_APDU = 4 + 3 + 65535 + 3


def _pcsc() -> ModuleType:
    """pyscard's low-level module, imported on first use."""
    try:
        from smartcard import scard
    except ImportError as exc:  # pragma: no cover - pyscard is a dependency
        raise TransportError(
            "card.pcsc_unavailable", "pyscard is not installed (pip install pyscard)", reason=str(exc)
        ) from None
    return scard


def _u32(hr: int) -> int:
    return hr & 0xFFFFFFFF


def _describe(hr: int) -> dict[str, str]:
    """PC/SC code facts for an error's details (hex code and pcsc-lite's text)."""
    hr = _u32(hr)
    try:
        text = _pcsc().SCardGetErrorMessage(hr)
    except Exception:  # the message is a nicety, never a second failure
        text = ""
    return {"pcsc_code": f"0x{hr:08X}", "pcsc_message": text}


def protocols_from_atr(atr: bytes) -> list[int]:
    """Transmission protocols an ATR offers, in its order (ISO/IEC 7816-3 8.2).

    The first is the card's default. T=15 (global bytes only) is not a protocol and is
    left out; an ATR without TD1 means T=0 only.
    """
    if len(atr) < 2:
        raise CardError("card.bad_atr", "ATR shorter than TS T0", atr=atr.hex())
    offered: list[int] = []
    y = atr[1] >> 4
    i = 2
    while True:
        i += bin(y & 0x7).count("1")  # TA, TB, TC of this group
        if not y & 0x8:
            break
        if i >= len(atr):
            raise CardError("card.bad_atr", "ATR ends inside its interface bytes", atr=atr.hex())
        td = atr[i]
        i += 1
        if td & 0x0F != 15 and td & 0x0F not in offered:
            offered.append(td & 0x0F)
        y = td >> 4
    return offered or [0]


def _protocol_mask(atr: bytes) -> int:
    for t in protocols_from_atr(atr):
        if t == 0:
            return _PROTOCOL_T0
        if t == 1:
            return _PROTOCOL_T1
    return _PROTOCOL_T0 | _PROTOCOL_T1  # neither offered plainly: let pcscd negotiate


def _match(pattern: str, readers: list[str]) -> str | None:
    needle = pattern.casefold()
    return next((r for r in readers if needle in r.casefold()), None)


class PcscTransport(ApduTransport):
    """APDUs to the card in the PC/SC reader whose name contains ``reader``.

    ``wait_s`` bounds every single PC/SC operation (connect, one APDU): a card that has
    not answered by then gives ``card.timeout``. ``on_card_event(present, reader)`` is
    called from a monitor thread on insertion and removal (the first observed state is
    reported too); keep it short and thread-safe.
    """

    def __init__(
        self,
        reader: str = "",
        exclusive: bool = True,
        wait_s: float = 10.0,
        on_card_event: CardEventCallback | None = None,
        poll_s: float = 0.5,
        use_logical_channel: bool = False,
    ) -> None:
        if wait_s <= 0 or poll_s <= 0:
            raise ValueError("wait_s and poll_s must be positive")
        self.reader_pattern = reader
        self.use_logical_channel = use_logical_channel
        self.exclusive = exclusive
        self.wait_s = wait_s
        self.poll_s = poll_s
        #: the full name of the reader in use (None until the first connect)
        self.reader_name: str | None = None
        #: the ATR of the connected card, and the protocol in use ("T=0" / "T=1")
        self.atr: bytes | None = None
        self.protocol: str | None = None
        self._ctx: Any = None
        self._card: Any = None
        self._proto: int = 0
        self._lock = threading.RLock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pcsc-io")
        self._stuck: Future | None = None
        self._closed = False
        self._monitor: _CardMonitor | None = None
        if on_card_event is not None:
            self._monitor = _CardMonitor(reader, on_card_event, poll_s, lambda: self.reader_name)
            self._monitor.start()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"pcsc:{self.reader_name or self.reader_pattern or '*'}"

    @property
    def connected(self) -> bool:
        return self._card is not None

    # -- the worker -------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, extra_s: float = 0.0) -> Any:
        """Run one PC/SC call on the worker thread; wait at most ``wait_s`` (+ ``extra_s``)."""
        if self._closed:
            raise TransportError("card.closed", f"{self.name} is closed")
        if self._stuck is not None:
            if not self._stuck.done():
                raise TransportError(
                    "card.timeout",
                    f"{self.name}: an earlier card command has still not completed",
                    reader=self.reader_name,
                )
            # the answer to that command is lost; the connection's state is unknown
            self._stuck = None
            self._discard()
        future = self._worker.submit(fn, *args)
        try:
            return future.result(self.wait_s + extra_s)
        except FutureTimeout:
            self._stuck = future
            raise TransportError(
                "card.timeout",
                f"{self.name}: no answer to {what} within {self.wait_s:g} s; not retried",
                reader=self.reader_name,
                operation=what,
            ) from None

    # -- connection -------------------------------------------------------------------

    def connect(self) -> None:
        """Connect to the card now (no-op when connected). Raises TransportError codes."""
        with self._lock:
            if self._card is None:
                self._connect()

    def _context(self) -> Any:
        scard = _pcsc()
        if self._ctx is None:
            hr, ctx = self._call("SCardEstablishContext", scard.SCardEstablishContext, _SCOPE_USER)
            if _u32(hr) != SCARD_S_SUCCESS:
                raise TransportError(
                    "card.pcsc_unavailable",
                    "cannot reach pcscd (is it running? /run/pcscd/pcscd.comm)",
                    **_describe(hr),
                )
            self._ctx = ctx
        return self._ctx

    def _readers(self) -> list[str]:
        scard = _pcsc()
        for attempt in (1, 2):
            ctx = self._context()
            hr, readers = self._call("SCardListReaders", scard.SCardListReaders, ctx, [])
            hr = _u32(hr)
            if hr == SCARD_S_SUCCESS:
                return list(readers)
            if hr == SCARD_E_NO_READERS_AVAILABLE:
                return []
            # a context from before a pcscd restart is dead: make a new one once
            self._release_context()
            if attempt == 2 or hr not in (_NO_SERVICE | {SCARD_E_INVALID_HANDLE}):
                raise TransportError(
                    "card.pcsc_unavailable", "pcscd does not answer SCardListReaders", **_describe(hr)
                )
        raise AssertionError("unreachable")

    def _find_reader(self) -> str:
        """The reader in use if still listed, else the first match holding a card, else the
        first match."""
        readers = self._readers()
        matches = [r for r in readers if self.reader_pattern.casefold() in r.casefold()]
        name = self.reader_name if self.reader_name in matches else None
        if name is None and len(matches) > 1:
            name = next((r for r in matches if self._has_card(r)), None)
        if name is None and matches:
            name = matches[0]
        if name is None:
            if self.reader_name is not None:
                raise TransportError(
                    "card.reader_gone",
                    f"reader {self.reader_name!r} is no longer attached",
                    reader=self.reader_name,
                    readers=readers,
                )
            raise TransportError(
                "card.reader_not_found",
                f"no PC/SC reader matches {self.reader_pattern!r}"
                + (f" (readers: {', '.join(readers)})" if readers else " (pcscd lists no readers)"),
                pattern=self.reader_pattern,
                readers=readers,
            )
        return name

    def _has_card(self, name: str) -> bool:
        hr, event, _ = self._reader_state(name)
        return hr == SCARD_S_SUCCESS and bool(event & _STATE_PRESENT)

    def _reader_state(
        self, name: str, current: int = _STATE_UNAWARE, timeout_ms: int = 0
    ) -> tuple[int, int, bytes]:
        """(return code, event state, ATR) of reader ``name``."""
        scard = _pcsc()
        hr, states = self._call(
            "SCardGetStatusChange",
            scard.SCardGetStatusChange,
            self._context(),
            timeout_ms,
            [(name, current)],
            extra_s=timeout_ms / 1000,
        )
        if _u32(hr) != SCARD_S_SUCCESS or not states:
            return _u32(hr), 0, b""
        _, event, atr = states[0]
        return SCARD_S_SUCCESS, event, bytes(atr)

    def _connect(self) -> None:
        scard = _pcsc()
        name = self._find_reader()
        hr, event, atr = self._reader_state(name)
        if hr in _READER_GONE:
            raise TransportError(
                "card.reader_gone", f"reader {name!r} went away", reader=name, **_describe(hr)
            )
        if hr != SCARD_S_SUCCESS:
            raise self._error(hr, "reading the reader state", name)
        if not event & _STATE_PRESENT:
            self.reader_name = name
            raise TransportError("card.absent", f"no card in {name!r}", reader=name)
        if event & _STATE_MUTE:
            raise TransportError("card.transport", f"the card in {name!r} gives no ATR (mute)", reader=name)
        mask = _protocol_mask(atr)
        share = _SHARE_EXCLUSIVE if self.exclusive else _SHARE_SHARED
        hr, card, proto = self._call("SCardConnect", scard.SCardConnect, self._context(), name, share, mask)
        hr = _u32(hr)
        if hr == SCARD_E_PROTO_MISMATCH and mask != _PROTOCOL_T0 | _PROTOCOL_T1:
            log.warning("%s: card refused T=%d from its ATR; letting pcscd choose", name, mask - 1)
            hr, card, proto = self._call(
                "SCardConnect", scard.SCardConnect, self._context(), name, share, _PROTOCOL_T0 | _PROTOCOL_T1
            )
            hr = _u32(hr)
        if hr != SCARD_S_SUCCESS:
            raise self._error(hr, "connecting", name)
        self._card, self._proto = card, proto
        self.reader_name, self.atr = name, atr
        self.protocol = "T=1" if proto == _PROTOCOL_T1 else "T=0"
        log.info("connected to %s (%s, ATR %s)", name, self.protocol, atr.hex())

    def _error(self, hr: int, doing: str, reader: str | None) -> TransportError:
        """A PC/SC failure as a TransportError with a stable code."""
        hr = _u32(hr)
        facts = {"reader": reader, **_describe(hr)}
        if hr in _NO_SERVICE:
            self._release_context()
            return TransportError("card.pcsc_unavailable", f"pcscd went away while {doing}", **facts)
        if hr == SCARD_E_NO_SMARTCARD:
            return TransportError("card.absent", f"no card in {reader!r}", **facts)
        if hr in (SCARD_W_REMOVED_CARD, SCARD_W_RESET_CARD):
            return TransportError("card.removed", f"the card in {reader!r} was removed or reset", **facts)
        if hr == SCARD_E_SHARING_VIOLATION:
            return TransportError(
                "card.sharing_violation", f"another process holds the card in {reader!r} exclusively", **facts
            )
        if hr in _READER_GONE:
            return TransportError("card.reader_gone", f"reader {reader!r} went away", **facts)
        if hr == SCARD_E_TIMEOUT:
            return TransportError("card.timeout", f"PC/SC timed out while {doing}", **facts)
        return TransportError(
            "card.transport", f"PC/SC error while {doing}: {facts['pcsc_message']}", **facts
        )

    # -- APDUs ------------------------------------------------------------------------

    def transmit(self, apdu: bytes) -> bytes:
        if not isinstance(apdu, bytes | bytearray | memoryview):
            raise CardError("card.bad_apdu", f"APDU must be bytes, not {type(apdu).__name__}")
        apdu = bytes(apdu)
        if not 4 <= len(apdu) <= MAX_APDU:
            raise CardError("card.bad_apdu", f"APDU of {len(apdu)} bytes (4..{MAX_APDU})", length=len(apdu))
        scard = _pcsc()
        with self._lock:
            if self._card is None:
                self._connect()
            reader = self.reader_name
            hr, response = self._call(
                f"APDU {apdu[:4].hex()}", scard.SCardTransmit, self._card, self._proto, list(apdu)
            )
            hr = _u32(hr)
            if hr == SCARD_S_SUCCESS and len(response) >= 2:
                return bytes(response)
            if hr == SCARD_S_SUCCESS or hr in _INTERRUPTED:
                raise self._interrupted(hr, apdu, reader, len(response or ()))
            self._discard(reset=False)  # the card is gone or was reset already
            err = self._error(hr, f"sending APDU {apdu[:4].hex()}", reader)
            if err.code == "card.removed":
                err.message = f"the card in {reader!r} was removed or reset before the command; not sent"
            raise err

    def _interrupted(self, hr: int, apdu: bytes, reader: str | None, got: int) -> TransportError:
        """The command got no status word: was the card pulled? Wait (bounded) to find out."""
        gone = self._wait_absent(reader, min(self.wait_s, max(2.0, 4 * self.poll_s)))
        # reset a card that is still there (its state is unknown); never one that left: a
        # failing reset races pcscd's own removal handling and can leave the slot "empty"
        self._discard(reset=not gone)
        facts: dict[str, Any] = {"reader": reader, "ins": f"{apdu[1]:02X}"}
        facts.update({"response_length": got} if hr == SCARD_S_SUCCESS else _describe(hr))
        if gone:
            return TransportError(
                "card.removed",
                f"the card in {reader!r} was removed during INS {apdu[1]:02X}; "
                "it may or may not have executed it; not retried",
                **facts,
            )
        return TransportError(
            "card.transport",
            f"no status word from the card in {reader!r} for INS {apdu[1]:02X}; not retried",
            **facts,
        )

    def _wait_absent(self, reader: str | None, timeout_s: float) -> bool:
        """True when the reader shows no card (or is gone) within ``timeout_s``."""
        if reader is None:
            return False
        deadline = time.monotonic() + timeout_s
        current = _STATE_UNAWARE
        while True:
            try:
                hr, event, _ = self._reader_state(
                    reader, current, int(max(0.0, deadline - time.monotonic()) * 1000)
                )
            except TransportError:
                return True  # pcscd itself went away: the card is not reachable either
            if hr in _READER_GONE or hr in _NO_SERVICE:
                return True
            if hr == SCARD_S_SUCCESS:
                if not event & _STATE_PRESENT:
                    return True
                current = event & ~_STATE_CHANGED
            if time.monotonic() >= deadline or hr not in (SCARD_S_SUCCESS, SCARD_E_TIMEOUT):
                return False

    def wait_for_card(self, timeout: float) -> None:
        """Block until a card is in the reader and connected, at most ``timeout`` seconds.

        Rides out pcscd restarts, a reader that is not attached yet, another process
        holding the card and an earlier command that timed out and is still pending. On
        timeout raises the last failure (``card.absent``, ``card.pcsc_unavailable``,
        ``card.reader_not_found``, ``card.timeout``...).
        """
        deadline = time.monotonic() + timeout
        while True:
            stuck = self._stuck
            if stuck is not None and not stuck.done():
                try:
                    stuck.exception(max(0.0, deadline - time.monotonic()))
                except FutureTimeout:
                    pass
            with self._lock:
                try:
                    if self._card is not None and self._still_connected():
                        return
                    self._connect()
                    return
                except TransportError as exc:
                    if exc.code == "card.closed":
                        raise
                    last = exc
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise last
            self._pause(min(remaining, self.poll_s))

    def _still_connected(self) -> bool:
        scard = _pcsc()
        hr, *_ = self._call("SCardStatus", scard.SCardStatus, self._card)
        if _u32(hr) == SCARD_S_SUCCESS:
            return True
        self._discard(reset=False)
        return False

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake early when the reader's state changes."""
        name = self.reader_name
        if name is not None and self._ctx is not None:
            with self._lock:
                try:
                    hr, event, _ = self._reader_state(name)
                    if hr == SCARD_S_SUCCESS:
                        self._reader_state(name, event & ~_STATE_CHANGED, int(seconds * 1000))
                        return
                except TransportError:
                    pass
        time.sleep(seconds)

    # -- teardown ---------------------------------------------------------------------

    def _discard(self, reset: bool = True) -> None:
        """Forget the card handle; ``reset`` a card that is still in the reader."""
        card, self._card = self._card, None
        self.atr = None
        self.protocol = None
        if card is not None and (self._stuck is None or self._stuck.done()):
            how = _RESET_CARD if reset else _LEAVE_CARD
            try:
                self._worker.submit(_pcsc().SCardDisconnect, card, how).result(self.wait_s)
            except Exception:  # the handle is dead already (card pulled, pcscd gone)
                pass

    def _release_context(self) -> None:
        self._discard()
        ctx, self._ctx = self._ctx, None
        if ctx is not None and (self._stuck is None or self._stuck.done()):
            try:
                self._worker.submit(_pcsc().SCardReleaseContext, ctx).result(self.wait_s)
            except Exception:
                pass

    def close(self) -> None:
        """Reset the card (so no PIN state or open channel is left for the next user),
        release the reader and stop the monitor. Idempotent."""
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None
        with self._lock:
            if self._closed:
                return
            self._release_context()
            self._closed = True
        self._worker.shutdown(wait=False)

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PcscTransport {self.name} {'connected' if self._card is not None else 'idle'}>"


class _CardMonitor:
    """Follows card presence in the reader the transport uses (before it has one: the first
    matching ``pattern``) and calls ``callback``.

    Uses its own PC/SC context and SCardGetStatusChange; a card event counter change
    (upper 16 bits of the event state) with the card present both times is a quick
    removal and reinsertion and is reported as both.
    """

    def __init__(
        self,
        pattern: str,
        callback: CardEventCallback,
        poll_s: float,
        in_use: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.pattern = pattern
        self.in_use = in_use
        self.callback = callback
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._ctx: Any = None
        self._ctx_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="pcsc-monitor", daemon=True)
        self._present: bool | None = None
        self._reader: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._ctx_lock:
            if self._ctx is not None:
                try:
                    _pcsc().SCardCancel(self._ctx)
                except Exception:
                    pass
        if self._thread is not threading.current_thread():
            self._thread.join(5 + self.poll_s)

    def _report(self, present: bool, reader: str) -> None:
        if present == self._present:
            return
        self._present = present
        try:
            self.callback(present, reader)
        except Exception:
            log.exception("card event callback failed")

    def _drop_context(self) -> None:
        with self._ctx_lock:
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            try:
                _pcsc().SCardReleaseContext(ctx)
            except Exception:
                pass

    def _run(self) -> None:
        try:
            scard = _pcsc()
        except TransportError:
            log.error("card monitor: pyscard missing; no card events")
            return
        current = _STATE_UNAWARE
        while not self._stop.is_set():
            if self._ctx is None:
                hr, ctx = scard.SCardEstablishContext(_SCOPE_USER)
                if _u32(hr) != SCARD_S_SUCCESS:
                    if self._reader is not None:
                        self._report(False, self._reader)
                    self._stop.wait(self.poll_s)
                    continue
                with self._ctx_lock:
                    self._ctx = ctx
                current = _STATE_UNAWARE
            hr, readers = scard.SCardListReaders(self._ctx, [])
            hr = _u32(hr)
            if hr in _NO_SERVICE or hr == SCARD_E_INVALID_HANDLE:
                self._drop_context()
                continue
            listed = list(readers) if hr == SCARD_S_SUCCESS else []
            name = self.in_use()  # the transport's reader, once it has one
            if name not in listed:
                name = _match(self.pattern, listed)
            if name is None:
                if self._reader is not None:
                    self._report(False, self._reader)
                self._stop.wait(self.poll_s)
                continue
            if name != self._reader:
                self._reader, current = name, _STATE_UNAWARE
            hr, states = scard.SCardGetStatusChange(self._ctx, int(self.poll_s * 1000), [(name, current)])
            hr = _u32(hr)
            if hr in (SCARD_E_TIMEOUT, SCARD_E_CANCELLED):
                continue
            if hr in _NO_SERVICE or hr == SCARD_E_INVALID_HANDLE:
                self._drop_context()
                continue
            if hr != SCARD_S_SUCCESS or not states:
                self._report(False, name)
                self._stop.wait(self.poll_s)
                current = _STATE_UNAWARE
                continue
            event = states[0][1]
            if event & (_STATE_UNKNOWN | _STATE_UNAVAILABLE):
                self._report(False, name)
                current = _STATE_UNAWARE
                self._stop.wait(self.poll_s)
                continue
            present = bool(event & _STATE_PRESENT) and not event & _STATE_MUTE
            if (
                present
                and self._present
                and current != _STATE_UNAWARE
                and (event >> 16) != (current >> 16)
                and current & _STATE_PRESENT
            ):
                self._report(False, name)  # pulled and put back between two looks
            self._report(present, name)
            current = event & ~_STATE_CHANGED
        self._drop_context()
