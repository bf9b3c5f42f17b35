"""The AT modem edge: a serial AT port (pyserial) and APDU transports over AT+CSIM and AT+CCHO/+CGLA.

:class:`AtPort` owns the port: a reader thread splits lines, :meth:`AtPort.command` sends one
command and waits, bounded, for its final result (``OK``, ``ERROR``, ``+CME ERROR: n``,
``+CMS ERROR: n``). Lines that do not belong to the pending command (``+CIREPH``, ``+CIREPI``,
``+CIREGU``, any other prefix) go to ``on_urc`` as they arrive, also in the middle of a
+CSIM/+CGLA transaction. The parser is tolerant of the dialects recorded in ``hw_profiles/``:
echo, spacing after the colon, missing quotes, missing prefixes, a wrong length field and
long lines.

Transactions cannot desynchronise (issue 9): after a timeout, a late answer, a second
answer or a final result nobody waited for, the port is *stale*; before the next command
it resynchronises (:meth:`AtPort._resync`: drain until the line is quiet, then a plain
``AT`` whose ``OK`` must come alone, repeated until it does) and counts it in
:attr:`AtPort.resyncs`. An answer that arrives when no command waits for it is dropped
(:attr:`AtPort.late_lines`), never handed to the next command. Noise modems print on their
own (``RDY``, ``PB DONE``, ``SMS DONE``, NULs, CR-only lines, bare numbers) is never data:
a +CSIM/+CGLA answer must parse as data||SW (TS 27.007 8.17, 8.43; the length field is
optional), a +CCHO session id must be digits (8.45; hex for profiles with opaque handles).
Port set-up sends ``ATE0``, ``ATV1`` and ``AT+CMEE=1`` (V.250 6.2.4, 6.2.6; TS 27.007 9.1)
at open and again after a modem reset, so a modem left in ``ATV0`` (numeric result codes
``0``/``4``, V.250 table 1) is brought back; nothing depends on ``=?`` test commands.
A modem or card reset (``RDY``, ``^SYSSTART``, ``+CPIN: READY`` as URCs, or the port
coming back) bumps :attr:`AtPort.generation` and :attr:`AtPort.resets`; channel sessions
of an older generation are dead and the card layer reopens them.

APDU hex never reaches a log or an exception: AUTHENTICATE answers carry RES, CK and IK.
Runs of hex are replaced by ``<hex:N>`` wherever a line is logged or quoted.

Error codes (:class:`ue_agent.errors.TransportError`): ``modem.error``, ``modem.cme_error``
(``details['cme']``), ``modem.cms_error``, ``modem.timeout``, ``modem.garbage``, ``modem.gone``,
``modem.not_supported``, ``modem.reopened``, ``modem.bad_apdu``, ``modem.bad_command``,
``modem.desync`` (the modem could not be brought back in step).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import ConfigError, TransportError
from ue_agent.profiles import STANDARD_URCS, AtDialect, Profile, resolve

log = logging.getLogger(__name__)
T = TypeVar("T")

_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8,}")
_FINAL_CME = re.compile(r"^\+CME ERROR:\s*(.*)$", re.IGNORECASE)
_FINAL_CMS = re.compile(r"^\+CMS ERROR:\s*(.*)$", re.IGNORECASE)
_PREFIX = re.compile(r"^([+^#$%*][A-Za-z0-9_]+)\s*:")
#: "<len>,"<hex>"" with or without prefix, spaces and quotes (ModemManager's Telit +CSIM tests,
#: https://github.com/estkme-group/lpac/pull/238 and /pull/445).
#: The length field is optional: some modems answer +CSIM: "<hex>" alone.
_LEN_HEX = re.compile(r'^\s*(?:(\d+)\s*,\s*)?"?\s*([0-9A-Fa-f]*)\s*"?\s*$')
#: +CCHO <sessionid>: an integer (TS 27.007 8.45)
_SESSION = re.compile(r'^\s*"?(\d{1,10})"?\s*$')
#: Sierra's opaque handle (lpac#138: 000000000385a7cf): hex digits only
_SESSION_OPAQUE = re.compile(r'^\s*"?([0-9A-Fa-f]{1,32})"?\s*$')
_BARE_URCS = ("RING", "NO CARRIER")
#: lines modems print on their own after power-up or SIM events: never data, never an answer
_NOISE = frozenset(
    {"RDY", "PB DONE", "SMS DONE", "SMS READY", "CALL READY", "^SYSSTART", "START", "POWERED DOWN"}
)
#: unsolicited lines that say the modem (and so the UICC) restarted, or the UICC was reset
_RESET_MARKERS = frozenset({"RDY", "^SYSSTART", "START"})
_CPIN_READY = re.compile(r"^\+CPIN:\s*\"?READY\"?$", re.IGNORECASE)
#: prefixes of answers to the commands this driver sends: seen with no command waiting, a late answer
_ANSWER_PREFIXES = ("+CSIM", "+CGLA", "+CCHO", "+CCHC", "+CRSM")
#: control characters (NULs above all) some modems put before or after lines
_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: V.250 numeric result codes (ATV0) accepted while the port is being set up: 0 OK, 4 ERROR
_NUMERIC_FINAL = {"0": "OK", "4": "ERROR"}
#: +CME ERROR 14: SIM busy (TS 27.007 9.2.1): the command did not run; it is sent again
CME_SIM_BUSY = 14
SIM_BUSY_WAIT_S = 3.0
#: resynchronisation: quiet time that ends a drain, and the longest drain
DRAIN_QUIET_S = 0.15
DRAIN_MAX_S = 2.0
RESYNC_ATTEMPTS = 5
#: reset markers this close to the first one belong to the same restart
RESET_COALESCE_S = 10.0
_MAX_BUFFER = 1 << 20  # a line longer than 1 MiB is garbage, whatever the modem


def _default_profile() -> Profile | None:
    """generic-at when it is installed; built-in defaults otherwise."""
    try:
        return resolve("generic-at")
    except ConfigError:
        return None


#: commands whose parameters are passwords (TS 27.007 8.3 +CPIN, 7.5 +CLCK, 7.5 +CPWD)
_SECRET_PARAMS = re.compile(r"^(\s*AT\s*\+(?:CPIN|CPWD|CLCK)\s*=).*$", re.IGNORECASE)


def redact(line: str) -> str:
    """A line fit for logs and error text: hex runs of 8+ digits become ``<hex:N>`` and the
    parameters of AT+CPIN= / +CPWD= / +CLCK= (a PIN or PUK) become ``<redacted>``."""
    line = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}<redacted>", line)
    return _HEX_RUN.sub(lambda m: f"<hex:{len(m.group())}>", line)


def _cme_code(text: str) -> int | str:
    text = text.strip()
    return int(text) if text.isdigit() else text


class _NotSent(TransportError):
    """modem.gone before the command reached the modem (the write failed)."""


@dataclass
class _Pending:
    command: str
    prefix: str | None
    numeric: bool = False  # V.250 numeric result codes accepted (port set-up commands)
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    done: bool = False
    was_numeric: bool = False


@dataclass
class AtResponse:
    """Information lines of one command (echo, URCs and the final result removed)."""

    command: str
    lines: list[str]
    #: the final result came as a V.250 numeric code (the modem is in ATV0)
    numeric: bool = False


class AtPort:
    """One AT command port. Thread-safe: one command at a time; URCs where the port is read.

    ``profile`` (a :class:`Profile` or a name) supplies init/shutdown commands, forbidden
    commands, vendor URC prefixes and the command timeout. ``init=False`` skips the init
    sequence (tests that want the modem's power-on echo). ``loop``: the port is read on that
    event loop instead of a reader thread (its tty watched with ``add_reader``), so URCs
    and reset listeners run in the loop's thread with no hop between threads; commands,
    which block until their answer, must then come from other threads.
    """

    def __init__(
        self,
        path: str,
        baudrate: int = 115200,
        profile: Profile | str | None = None,
        on_urc: Callable[[str], None] | None = None,
        *,
        timeout: float | None = None,
        reopen_wait: float = 5.0,
        init: bool = True,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.path = str(path)
        self._loop = loop
        self.baudrate = baudrate
        self.profile = _default_profile() if profile is None else resolve(profile)
        self.dialect: AtDialect = (
            self.profile.at if self.profile and self.profile.at else None
        ) or AtDialect()
        self.on_urc = on_urc
        self.timeout = timeout if timeout is not None else self.dialect.command_timeout_s
        self.reopen_wait = reopen_wait
        self._do_init = init
        self._urc_prefixes = tuple(
            p.upper()
            for p in (
                *STANDARD_URCS,
                *(self.profile.ims.urcs if self.profile and self.profile.ims else ()),
                *self.dialect.urcs,
            )
        )
        self._cmd_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: _Pending | None = None
        self._ser: Any = None
        self._reader: threading.Thread | None = None
        self._gone = True
        self._stale = False
        self._needs_init = False
        self._closed = False
        self._last_rx = 0.0
        self._last_reset = -RESET_COALESCE_S
        self._cpin_expected = 0.0
        #: increases every time the port is (re)opened or a modem/card reset is seen; channel
        #: sessions of an older generation are dead.
        self.generation = 0
        #: resynchronisations done (after a timeout, a late or unexpected answer)
        self.resyncs = 0
        #: answer lines that arrived when no command waited for them (dropped, never handed on)
        self.late_lines = 0
        #: modem or card resets seen (reset URCs, the port coming back)
        self.resets = 0
        #: commands sent again after every set-up (AT+CIREP=1...): see enable_ims_reporting()
        self.after_setup: list[str] = []
        #: information lines of the last command that timed out (a +CCHO session to close)
        self.partial: list[str] = []
        #: called with a short reason (where the port is read) when a modem or card reset is seen
        self.reset_listeners: list[Callable[[str], None]] = []
        #: the last late answer lines dropped (a channel opened whose answer came too late)
        self.dropped: deque[str] = deque(maxlen=8)
        with self._cmd_lock:
            self._open()

    # --- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        import serial  # pyserial, imported only when a modem is used

        try:
            # timeout=None: the reader blocks until data comes or close() cancels the read (no
            # wake-ups while the modem is quiet: a handset's battery, issue 14); command
            # deadlines are kept by the waiting caller, not by the read
            ser = serial.Serial(self.path, self.baudrate, timeout=None, write_timeout=2.0, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(
                "modem.gone", f"cannot open AT port {self.path}: {exc.__class__.__name__}", port=self.path
            ) from None
        _take_tty_exclusively(ser)
        ser.reset_input_buffer()
        self._ser = ser
        with self._cond:
            self._gone = False
            self._pending = None
        self._stale = False
        self._needs_init = False
        if self.generation:
            self.resets += 1  # the port came back: the modem restarted, its channels are gone
        self.generation += 1
        self._start_reading(ser)
        log.info("AT port %s open (profile %s)", self.path, self.profile.name if self.profile else "-")
        if self._do_init:
            self._initialize()

    def _initialize(self) -> None:
        """Port set-up: in step with the modem, then E0 (no echo), V1 (verbose result codes,
        V.250 6.2.6), CMEE=1 (numeric +CME ERROR), the profile's init and the commands kept
        in :attr:`after_setup`. Run at open and again after a modem reset."""
        self._needs_init = False
        self._sync()
        advisory = ("ATE0", "ATV1", "AT+CMEE=1")  # nice to have; the parser copes without them
        setup = dict.fromkeys(("ATE0", "ATV1", "AT+CMEE=1", *self.dialect.init))
        for cmd in setup:
            try:
                self._command_locked(cmd, self.timeout, numeric=cmd in ("ATE0", "ATV1"))
            except TransportError as exc:
                if exc.code in ("modem.gone", "modem.timeout") or cmd not in advisory:
                    raise
                log.warning("AT port %s: %s failed at init (%s)", self.path, cmd, exc.code)
        for cmd in self.after_setup:
            if cmd in setup:
                continue
            try:
                self._command_locked(cmd, self.timeout)
            except TransportError as exc:
                if exc.code in ("modem.gone", "modem.timeout"):
                    raise
                log.warning("AT port %s: %s refused after set-up (%s)", self.path, cmd, exc.code)

    def _sync(self) -> None:
        """Get the modem's attention: plain 'AT' (OK or a numeric 0) until it comes alone."""
        self._resync(count=False)

    def _drain(self) -> None:
        """Wait until no line has come for DRAIN_QUIET_S (at most DRAIN_MAX_S): answers still
        on their way arrive now, with no command waiting, and are dropped."""
        end = time.monotonic() + DRAIN_MAX_S
        while True:
            now = time.monotonic()
            idle = now - self._last_rx
            if idle >= DRAIN_QUIET_S or now >= end or self._gone:
                return
            time.sleep(min(DRAIN_QUIET_S - idle, end - now))

    def _resync(self, count: bool = True) -> None:
        """Bring the port back in step: drain, then a plain ``AT`` whose ``OK`` must come with
        no other line before it and none after it (within a drain); else again.

        Modems answer in order: once the OK of our AT came alone, every older answer has been
        seen (and dropped). ``count``: a resync after trouble (not the one at open).
        """
        if count:
            self.resyncs += 1
            log.warning("AT port %s: resynchronising (%d so far)", self.path, self.resyncs)
        last: TransportError | None = None
        for _ in range(RESYNC_ATTEMPTS):
            self._drain()
            late = self.late_lines
            try:
                resp = self._command_locked("AT", min(self.timeout, 2.0), numeric=True)
            except TransportError as exc:
                if exc.code == "modem.gone":
                    raise
                last = exc  # an ERROR or a timeout: an older answer's, or a modem still busy
                continue
            self._drain()
            if resp.lines or self.late_lines != late:
                continue  # an older answer came in between: not yet in step
            self._stale = False
            if resp.numeric:
                log.info("AT port %s: numeric result codes (ATV0): set-up again", self.path)
                self._needs_init = True
            return
        self._stale = True
        if not count and last is not None:
            raise last  # at open: the modem does not answer (modem.timeout) or refuses AT
        raise TransportError(
            "modem.desync",
            f"AT port {self.path}: the modem did not come back in step"
            + (f" ({last.code})" if last is not None else ""),
            port=self.path,
        )

    def _prepare(self) -> None:
        """Before a command: resynchronise a stale port, set up a modem that was reset."""
        if self._stale:
            self._resync()
        if self._needs_init:
            self._initialize()

    def settle(self) -> None:
        """Resynchronise now if the port is stale (late answers then land in :attr:`dropped`)."""
        with self._cmd_lock:
            self._ensure_open()
            self._prepare()

    def counters(self) -> dict[str, int]:
        """The port's health figures for status: resyncs, late lines, resets seen."""
        return {
            "resyncs": self.resyncs,
            "late_lines": self.late_lines,
            "resets": self.resets,
            "generation": self.generation,
        }

    def _ensure_open(self) -> None:
        if self._closed:
            raise TransportError("modem.gone", f"AT port {self.path} is closed", port=self.path)
        if not self._gone:
            return
        self._drop_serial()
        deadline = time.monotonic() + self.reopen_wait
        while not os.path.exists(self.path):
            if time.monotonic() >= deadline:
                raise TransportError(
                    "modem.gone", f"AT port {self.path} is gone and did not come back", port=self.path
                )
            time.sleep(0.05)
        self._open()

    def _drop_serial(self) -> None:
        ser, self._ser = self._ser, None
        if ser is not None:
            if self._loop is not None:
                self._on_loop(lambda: self._unwatch(ser))  # before its fd closes
            try:
                ser.cancel_read()
            except Exception:
                pass
            _take_tty_exclusively(ser, False)
            try:
                ser.close()
            except Exception:  # the device may already be gone
                pass
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=2.0)
        self._reader = None

    def close(self) -> None:
        """Send the profile's shutdown commands (best effort) and release the port. Idempotent."""
        with self._cmd_lock:
            if self._closed:
                return
            if not self._gone:
                for cmd in self.dialect.shutdown:
                    try:
                        self._command_locked(cmd, min(self.timeout, 2.0))
                    except TransportError as exc:
                        log.info("AT port %s: %s at close: %s", self.path, cmd, exc.code)
            self._closed = True
            with self._cond:
                self._gone = True
                self._cond.notify_all()
            self._drop_serial()

    def __enter__(self) -> AtPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return not self._gone and not self._closed

    # --- reading: a reader thread, or the event loop (loop=) ----------------------------------------

    def _start_reading(self, ser: Any) -> None:
        if self._loop is None:
            self._reader = threading.Thread(
                target=self._read_loop, args=(ser,), name=f"at-reader:{self.path}", daemon=True
            )
            self._reader.start()
            return
        fd, buf = ser.fileno(), bytearray()
        os.set_blocking(fd, False)  # pyserial opens it so; read only what is there
        loop = self._loop
        self._on_loop(lambda: loop.add_reader(fd, self._on_readable, ser, fd, buf))

    def _on_loop(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` in the loop's thread, and wait for it (2 s at most) when called from another."""
        loop = self._loop
        assert loop is not None
        if asyncio._get_running_loop() is loop:
            fn()
            return
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: nothing is watched any more
            return
        done.wait(2.0)

    def _unwatch(self, ser: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.remove_reader(ser.fileno())
        except Exception:  # closed already, or the loop is
            pass

    def _on_readable(self, ser: Any, fd: int, buf: bytearray) -> None:
        """The tty has data (or ended): the loop-mode twin of :meth:`_read_loop`'s read."""
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: the device went away (a pty whose other end closed)
            chunk = b""
        if ser is not self._ser or not chunk:
            self._unwatch(ser)  # a gone tty stays readable: never spin on it
            self._reader_ended(ser)
            return
        self._feed(buf, chunk)

    def _read_loop(self, ser: Any) -> None:
        import serial

        buf = bytearray()
        while True:
            try:
                chunk = ser.read(max(1, ser.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError):
                # TypeError/AttributeError: pyserial after close() from another thread
                break
            if ser is not self._ser:
                break
            if chunk:
                self._feed(buf, chunk)
        self._reader_ended(ser)

    def _feed(self, buf: bytearray, chunk: bytes) -> None:
        """Bytes read from the port: each whole line to :meth:`_on_line`."""
        buf += chunk
        while True:
            cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
            if cut < 0:
                break
            raw = bytes(buf[:cut])
            del buf[: cut + 1]
            line = _CTRL.sub("", raw.decode("utf-8", errors="replace")).strip()
            if line:  # CR-only and NUL-only lines are nothing
                self._last_rx = time.monotonic()
                self._on_line(line)
        if len(buf) > _MAX_BUFFER:
            log.warning("AT port %s: dropping %d bytes without a line end", self.path, len(buf))
            buf.clear()
            self._on_line("\ufffd<overlong>")

    def _reader_ended(self, ser: Any) -> None:
        with self._cond:
            if ser is self._ser or self._ser is None:
                self._gone = True
            self._cond.notify_all()
        log.info("AT port %s: reader stopped", self.path)

    def _is_final(self, p: _Pending, line: str, upper: str) -> bool:
        if upper in ("OK", "ERROR") or _FINAL_CME.match(line) or _FINAL_CMS.match(line):
            p.final = line
            return True
        if p.numeric and upper in _NUMERIC_FINAL:
            p.final, p.was_numeric = _NUMERIC_FINAL[upper], True
            return True
        return False

    def _on_line(self, line: str) -> None:
        urc = False
        upper = line.upper()
        with self._cond:
            p = self._pending
            if p is None or p.done:
                urc = True
            else:
                if upper == p.command.upper():
                    return  # echo
                if self._is_final(p, line, upper):
                    p.done = True
                    self._cond.notify_all()
                    return
                m = _PREFIX.match(line)
                foreign = m is not None and (p.prefix is None or m.group(1).upper() != p.prefix)
                if foreign or upper.startswith(self._urc_prefixes) or upper in _BARE_URCS or upper in _NOISE:
                    urc = True
                else:
                    p.lines.append(line)
        if urc:
            self._unsolicited(line, upper)

    def _unsolicited(self, line: str, upper: str) -> None:
        """A line no command is waiting for: noise, a reset, a late answer, or a URC."""
        if upper in _RESET_MARKERS or (_CPIN_READY.match(line) and time.monotonic() > self._cpin_expected):
            self._on_reset(line)
        if upper in _NOISE:
            log.debug("AT port %s: noise %r dropped", self.path, line[:20])
            return
        if self._late_answer(line, upper):
            self.dropped.append(line)
            self.late_lines += 1
            self._stale = True  # resynchronise before the next command
            log.warning("AT port %s: late answer %s dropped", self.path, redact(line)[:40])
            return
        self._deliver_urc(line)

    def _late_answer(self, line: str, upper: str) -> bool:
        """Whether an unsolicited line is an answer to some command (a late one)."""
        if upper in ("OK", "ERROR") or _FINAL_CME.match(line) or _FINAL_CMS.match(line):
            return True
        m = _PREFIX.match(line)
        if m:
            return m.group(1).upper() in _ANSWER_PREFIXES
        # a bare answer (Fibocom) that parses as data||SW
        lm = _LEN_HEX.match(line)
        return lm is not None and _valid_apdu_answer(lm) is not None

    def _on_reset(self, line: str) -> None:
        """The modem restarted or the UICC was reset: set up the port again, channels are dead.

        A restart prints several markers (RDY, then +CPIN: READY when the UICC is up, ...):
        those within RESET_COALESCE_S of the first are the same reset."""
        now = time.monotonic()
        with self._cond:
            self._needs_init = True
            if now - self._last_reset < RESET_COALESCE_S:
                return
            self._last_reset = now
            self.resets += 1
            self.generation += 1
        log.warning("AT port %s: reset seen (%s): channels are gone", self.path, line[:20])
        self._deliver_urc(line)
        self._announce_reset(line[:20])

    def expect_cpin_ready(self, window_s: float = 10.0) -> None:
        """The next ``+CPIN: READY`` within ``window_s`` answers our own PIN entry (AT+CPIN=):
        not a reset. ``RDY`` still is."""
        self._cpin_expected = time.monotonic() + window_s

    def request_setup(self) -> None:
        """Run the port set-up again before the next command (a silent modem restart lost E0,
        V1, CMEE and the reporting commands)."""
        with self._cond:
            self._needs_init = True

    def mark_reset(self, why: str) -> None:
        """A reset found out by its effects (a channel session the modem no longer knows)."""
        with self._cond:
            self._needs_init = True
            self._last_reset = time.monotonic()
            self.resets += 1
            self.generation += 1
        log.warning("AT port %s: reset inferred (%s): channels are gone", self.path, why)
        self._announce_reset(why)

    def _announce_reset(self, why: str) -> None:
        for listener in list(self.reset_listeners):
            try:
                listener(why)
            except Exception:
                log.exception("AT port %s: reset listener failed", self.path)

    def revive(self) -> int:
        """Reopen the port now if it went away and its path is back (no wait); the generation."""
        if self._gone and not self._closed and os.path.exists(self.path):
            with self._cmd_lock:
                if self._gone and not self._closed:
                    try:
                        self._ensure_open()
                    except TransportError as exc:
                        log.info("AT port %s: not back yet (%s)", self.path, exc.code)
        return self.generation

    def _deliver_urc(self, line: str) -> None:
        log.debug("AT port %s: URC %s", self.path, redact(line))
        if self.on_urc is None:
            return
        try:
            self.on_urc(line)
        except Exception:
            log.exception("AT port %s: on_urc callback failed", self.path)

    # --- commands -----------------------------------------------------------------------------------

    def command(self, cmd: str, timeout: float | None = None, *, generation: int | None = None) -> AtResponse:
        """Send ``cmd`` (without CR) and return its information lines once OK arrives.

        A port that vanished is reopened first when its path is back (bounded by
        ``reopen_wait``). ``generation``: the caller holds state tied to one opening of the
        port (a +CCHO session); if the port was reopened since, ``modem.reopened`` is raised
        instead of sending.

        Raises TransportError: modem.error, modem.cme_error, modem.cms_error, modem.timeout,
        modem.gone, modem.reopened, modem.not_supported (a command the profile forbids).
        """
        cmd = cmd.strip()
        if not cmd.upper().startswith("AT") or any(c in cmd for c in "\r\n\x1a\x1b"):
            raise TransportError("modem.bad_command", "not a single AT command", command=redact(cmd))
        for bad in self.dialect.forbidden:
            if cmd.upper().startswith(bad.upper()):
                raise TransportError(
                    "modem.not_supported",
                    f"{bad} is forbidden by profile {self.profile.name if self.profile else '-'}",
                    command=bad,
                )
        with self._cmd_lock:
            for attempt in (0, 1):
                self._ensure_open()
                try:
                    self._prepare()
                    if generation is not None and generation != self.generation:
                        raise TransportError(
                            "modem.reopened", f"AT port {self.path} was reopened or reset", port=self.path
                        )
                    return self._command_busy(cmd, timeout if timeout is not None else self.timeout)
                except _NotSent:
                    # the write failed: the modem never saw the command; once more on the new port
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def _command_busy(self, cmd: str, timeout: float) -> AtResponse:
        """The command, sent again while the modem answers "SIM busy" (it did not run it)."""
        deadline = time.monotonic() + SIM_BUSY_WAIT_S
        wait = 0.1
        while True:
            try:
                return self._command_locked(cmd, timeout)
            except TransportError as exc:
                busy = exc.code == "modem.cme_error" and (
                    exc.details.get("cme") == CME_SIM_BUSY
                    or str(exc.details.get("cme")).upper() == "SIM BUSY"
                )
                if not busy or time.monotonic() + wait > deadline:
                    raise
            log.info("AT port %s: SIM busy, again in %.1f s", self.path, wait)
            time.sleep(wait)
            wait = min(wait * 2, 1.0)

    def _command_locked(self, cmd: str, timeout: float, *, numeric: bool = False) -> AtResponse:
        if self._loop is not None and asyncio._get_running_loop() is self._loop:
            # its answer would be read by this very thread, which would be waiting for it
            raise RuntimeError(f"AT port {self.path}: a command from its event loop's thread")
        m = re.match(r"^AT([+^#$%*][A-Za-z0-9_]+)", cmd, re.IGNORECASE)
        pending = _Pending(command=cmd, prefix=m.group(1).upper() if m else None, numeric=numeric)
        with self._cond:
            if self._gone:
                raise TransportError("modem.gone", f"AT port {self.path} vanished", port=self.path)
            self._pending = pending
        log.debug("AT port %s: > %s", self.path, redact(cmd))
        try:
            self._ser.write(cmd.encode("ascii") + b"\r")
        except Exception as exc:  # SerialException, OSError (EIO), pyserial internals after close
            with self._cond:
                self._gone = True
                self._pending = None
            raise _NotSent(
                "modem.gone", f"AT port {self.path} vanished ({exc.__class__.__name__})", port=self.path
            ) from None
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pending.done and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._pending = None
            gone = self._gone and not pending.done
        if gone:
            raise TransportError(
                "modem.gone", f"AT port {self.path} vanished during a command", port=self.path
            )
        if not pending.done:
            self._stale = True
            self.partial = list(pending.lines)
            raise TransportError(
                "modem.timeout",
                f"no final result to {redact(cmd)[:40]} within {timeout:g} s",
                port=self.path,
                timeout_s=timeout,
            )
        final = pending.final or ""
        log.debug("AT port %s: < %d line(s), %s", self.path, len(pending.lines), redact(final))
        if final.upper() == "OK":
            return AtResponse(cmd, pending.lines, pending.was_numeric)
        self._deliver_leftovers(pending.lines)
        short = redact(cmd)[:40]
        if final.upper() == "ERROR":
            raise TransportError("modem.error", f"{short}: ERROR", port=self.path)
        cme = _FINAL_CME.match(final)
        if cme:
            code = _cme_code(cme.group(1))
            raise TransportError("modem.cme_error", f"{short}: +CME ERROR: {code}", port=self.path, cme=code)
        cms = _FINAL_CMS.match(final)
        code = _cme_code(cms.group(1)) if cms else final
        raise TransportError("modem.cms_error", f"{short}: +CMS ERROR: {code}", port=self.path, cms=code)

    def _deliver_leftovers(self, lines: list[str]) -> None:
        for line in lines:
            self._deliver_urc(line)

    def take(
        self, resp: AtResponse, prefix: str, pattern: re.Pattern[str], *, bare: bool = True
    ) -> re.Match[str]:
        """The information line matching ``pattern`` after ``prefix`` (or bare, when allowed).

        A prefixed line wins over a bare one. Lines that do not match are handed to
        ``on_urc`` (they were not this command's). Nothing matching -> modem.garbage.
        """
        return self.take_one(resp, prefix, pattern.match, bare=bare)

    def take_one(
        self,
        resp: AtResponse,
        prefix: str,
        parse: Callable[[str], T | None],
        *,
        bare: bool = True,
    ) -> T:
        """The ONE information line of ``resp`` that ``parse`` accepts after ``prefix``.

        Prefixed lines are tried first; bare lines only when ``bare`` and no prefixed line
        parses. Noise (bare numbers, stray text) does not parse and is passed to ``on_urc``.
        Two lines that parse: answers of two commands in one transaction, the port is out of
        step: it is marked stale and modem.desync raised. None: modem.garbage.
        """
        prefixed: list[tuple[str, T]] = []
        loose: list[tuple[str, T]] = []
        for line in resp.lines:
            if line.upper().startswith(prefix.upper()):
                after = line[len(prefix) :].lstrip()
                if after.startswith(":"):
                    got = parse(after[1:])
                    if got is not None:
                        prefixed.append((line, got))
            elif bare:
                got = parse(line)
                if got is not None:
                    loose.append((line, got))
        found = prefixed or loose
        if len(found) > 1:
            self._stale = True
            raise TransportError(
                "modem.desync",
                f"{len(found)} {prefix} answers to one command: the port is out of step",
                port=self.path,
            )
        if not found:
            raise TransportError(
                "modem.garbage",
                f"no {prefix} answer in {len(resp.lines)} line(s)",
                port=self.path,
                lines=[redact(x)[:60] for x in resp.lines[:4]],
            )
        chosen = found[0][0]
        self._deliver_leftovers([x for x in resp.lines if x is not chosen])
        return found[0][1]

    def probe(self, command_name: str) -> bool:
        """Whether ``AT<command_name>=?`` answers OK. Profiles that list the command in
        ``no_test_commands`` are not asked (their modems answer ERROR although the command works)."""
        if command_name.upper() in (c.upper() for c in self.dialect.no_test_commands):
            return True
        try:
            self.command(f"AT{command_name}=?")
        except TransportError as exc:
            if exc.code in ("modem.error", "modem.cme_error"):
                return False
            raise
        return True

    def crsm(
        self,
        command: int,
        fileid: int | None = None,
        p1: int = 0,
        p2: int = 0,
        p3: int = 0,
        data: bytes = b"",
        pathid: str = "",
    ) -> tuple[int, bytes]:
        """AT+CRSM (TS 27.007 8.18): restricted SIM access. Returns (SW, response data)."""
        parts = [str(command)]
        if fileid is not None:
            parts += [str(fileid), str(p1), str(p2), str(p3)]
            if data or pathid:
                parts.append(f'"{data.hex().upper()}"' if data else "")
            if pathid:
                parts.append(f'"{pathid.upper()}"')
        resp = self.command("AT+CRSM=" + ",".join(parts))
        m = self.take(resp, "+CRSM", re.compile(r'^\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*"?([0-9A-Fa-f]*)"?)?\s*$'))
        sw = (int(m.group(1)) << 8) | int(m.group(2))
        return sw, bytes.fromhex(m.group(3) or "")


# --- APDU transports ----------------------------------------------------------------------------


def _check_apdu(apdu: bytes) -> None:
    if not isinstance(apdu, bytes | bytearray) or len(apdu) < 4 or len(apdu) > 261:
        raise TransportError("modem.bad_apdu", "APDU must be 4..261 bytes", length=len(apdu))


def _valid_apdu_answer(m: re.Match[str]) -> bytes | None:
    """data||SW from a +CSIM/+CGLA body "[<length>,]"<hex>"", or None when it is not one.

    Whole bytes, at least SW1 SW2, SW1 a status byte (ISO 7816-4 5.1.3: 61-6F, 90-9F). The
    length field counts hex characters (TS 27.007 8.17); some modems count bytes, some write
    none, some a wrong one: the data are what counts (ModemManager's Telit parser does not
    trust it either).
    """
    length, hexdata = m.group(1), m.group(2)
    if len(hexdata) % 2 or len(hexdata) < 4:
        return None
    if length is not None and int(length) not in (len(hexdata), len(hexdata) // 2):
        log.debug("+CSIM/+CGLA length field %s for %d hex chars", length, len(hexdata))
    raw = bytes.fromhex(hexdata)
    if not (0x61 <= raw[-2] <= 0x6F or 0x90 <= raw[-2] <= 0x9F):
        return None
    return raw


def _parse_apdu_body(body: str) -> bytes | None:
    m = _LEN_HEX.match(body)
    return _valid_apdu_answer(m) if m else None


def _parse_len_hex(port: AtPort, resp: AtResponse, prefix: str, *, bare: bool = True) -> bytes:
    """The one data||SW answer in ``resp`` (modem.garbage when none, modem.desync when two)."""
    return port.take_one(resp, prefix, _parse_apdu_body, bare=bare)


#: APDUs that change nothing on the card: sent once more after a timeout or a rejected answer
#: (after the port resynchronised). SELECT, READ BINARY, READ RECORD, STATUS.
_IDEMPOTENT_INS = frozenset({0xA4, 0xB0, 0xB2, 0xF2})
#: transport failures after which such an APDU is sent again
_RETRY_CODES = frozenset({"modem.timeout", "modem.garbage", "modem.desync"})


def _idempotent(apdu: bytes) -> bool:
    return apdu[1] in _IDEMPOTENT_INS


def _session_unknown(exc: TransportError) -> bool:
    """ERROR or +CME ERROR 21 (invalid index) / 3 (not allowed) to +CGLA on a known session."""
    if exc.code == "modem.error":
        return True
    cme = exc.details.get("cme")
    return exc.code == "modem.cme_error" and (cme in (3, 21) or str(cme).lower() == "invalid index")


def _opens_channel(apdu: bytes) -> bool:
    """MANAGE CHANNEL open with the number assigned by the card (P1 '00', P2 '00')."""
    return apdu[1] == 0x70 and apdu[2] == 0x00 and apdu[3] == 0x00


class CsimTransport(ApduTransport):
    """APDUs over AT+CSIM on the modem's basic channel (TS 27.007 8.17).

    ``bind_application(aid)`` gives a :class:`CglaTransport` when the profile reaches the
    card through AT+CCHO/+CGLA, and refuses (NotImplementedError) otherwise: the card layer
    then selects the application itself. ``probe``: ask ``AT+CSIM=?`` first (off by default:
    modems that never answer test commands exist; a refused +CSIM says the same).
    """

    mode = "basic"

    def __init__(self, port: AtPort, *, probe: bool = False) -> None:
        self.port = port
        self.name = f"at:{port.path}"
        profile = port.profile
        # "bound": the card layer reaches applications through bind_application() (AT+CCHO/+CGLA);
        # the basic channel (+CSIM) still serves EF_DIR and the MF files.
        self.mode = "bound" if profile is not None and profile.access == "cgla" else "basic"
        self.use_logical_channel = bool(
            profile and profile.card.logical_channels == "manage_channel" and profile.access == "csim"
        )
        self.retries = 0  # idempotent APDUs sent again after a timeout or a bad answer
        if profile and not profile.card.csim:
            raise TransportError(
                "modem.not_supported", f"profile {profile.name} has no AT+CSIM", port=port.path
            )
        if probe and not port.probe("+CSIM"):
            raise TransportError("modem.not_supported", "the modem does not offer AT+CSIM", port=port.path)

        port.reset_listeners.append(self._reset_seen)

    def _reset_seen(self, why: str) -> None:
        if self.on_reset is not None:
            self.on_reset(why)

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self.port.generation

    def check_epoch(self) -> int:
        return self.port.revive()

    def after_reset(self) -> None:
        self.port.request_setup()

    def transmit(self, apdu: bytes) -> bytes:
        _check_apdu(apdu)
        h = bytes(apdu).hex().upper()
        for attempt in (0, 1):
            if _opens_channel(apdu):
                self.port.dropped.clear()
            try:
                resp = self.port.command(f'AT+CSIM={len(h)},"{h}"')
                return _parse_len_hex(self.port, resp, "+CSIM")
            except TransportError as exc:
                if exc.code == "modem.cme_error" and exc.details.get("cme") == 4:
                    raise TransportError(
                        "modem.not_supported", "AT+CSIM: operation not supported", port=self.port.path
                    ) from None
                if attempt or exc.code not in _RETRY_CODES:
                    raise
                if _opens_channel(apdu):
                    self._close_unanswered_channel(exc)
                elif not _idempotent(apdu):
                    raise
                self.retries += 1
                log.info("AT port %s: +CSIM %s, sent again", self.port.path, exc.code)
        raise AssertionError("unreachable")

    def _close_unanswered_channel(self, exc: TransportError) -> None:
        """MANAGE CHANNEL open whose answer did not come in time: the card may have opened a
        channel nobody knows. Once the port is in step, its answer is among the timed-out
        command's lines or the late lines dropped: close that channel (TS 102 221 11.1.17)
        before opening again, so that none leaks."""
        if exc.code != "modem.timeout":
            return
        self.port.settle()
        lines = [*self.port.partial, *self.port.dropped]
        self.port.partial = []
        self.port.dropped.clear()
        for line in lines:
            prefixed = line.upper().startswith("+CSIM") and ":" in line
            raw = _parse_apdu_body(line.split(":", 1)[1] if prefixed else line)
            if raw is not None and len(raw) == 3 and raw[-2:] == b"\x90\x00" and 1 <= raw[0] <= 19:
                log.info("AT port %s: closing channel %d opened without an answer", self.port.path, raw[0])
                self.transmit(bytes([0x00, 0x70, 0x80, raw[0]]))
                return

    def bind_application(self, aid: bytes) -> ApduTransport:
        profile = self.port.profile
        if profile is None or profile.access != "cgla":
            raise NotImplementedError("this modem profile reaches the card through AT+CSIM only")
        bound = CglaTransport(self.port, aid, record=self.channel_record)
        return bound

    def reclaim(self, key: str) -> bool:
        """``ccho:<session>``: AT+CCHC on a session a predecessor left open (TS 27.007 8.46).
        An error answer (+CME ERROR 21 invalid index...) means the modem knows no such
        session any more: nothing left to close."""
        kind, _, session = key.partition(":")
        profile = self.port.profile
        if kind != "ccho" or not _SESSION_OPAQUE.match(session):
            return False
        if profile is not None and not profile.card.cchc:
            return True  # the modem cannot close it; keeping the key would not help either
        try:
            self.port.command(f"AT+CCHC={session}")
        except TransportError as exc:
            if exc.code not in ("modem.error", "modem.cme_error"):
                raise
        return True

    def close(self) -> None:
        self.port.close()


def _cla_channel_zero(cla: int) -> int:
    """CLA with the logical-channel bits cleared: the MT sets them for +CGLA (TS 27.007; lpac#138)."""
    if cla & 0x40:  # further interindustry (channels 4..19): b5 chaining, b6 secure messaging
        return (cla & 0x10) | (0x0C if cla & 0x20 else 0)
    return cla & 0xFC


class CglaTransport(ApduTransport):
    """APDUs on a logical channel the modem opened with AT+CCHO and selected ``aid`` on.

    The session id is kept as the opaque token the modem printed (Sierra answers a long
    handle). When the port was reopened or the modem reset since, the channel is gone:
    the APDU fails with ``modem.reopened`` and the next one opens the channel again.
    ``record``: where the open session is noted (see :mod:`ue_agent.channel_record`) so a
    successor can close it after a crash.
    """

    mode = "bound"

    def __init__(self, port: AtPort, aid: bytes, *, record: Any = None) -> None:
        if not 5 <= len(aid) <= 16:
            raise TransportError("modem.bad_apdu", "AID must be 5..16 bytes", length=len(aid))
        self.port = port
        self.aid = bytes(aid)
        self.name = f"at:{port.path}:cgla"
        self.channel_record = record
        self.session: str | None = None
        self._generation = -1
        self._worked = False  # an APDU went through on this session
        self.retries = 0
        self._open_channel()

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self.port.generation

    def _session_of(self, resp: AtResponse) -> str:
        opaque = self.port.profile is not None and self.port.profile.card.session_id == "opaque"
        pattern = _SESSION_OPAQUE if opaque else _SESSION

        def parse(body: str) -> str | None:
            m = pattern.match(body)
            return m.group(1) if m else None

        return self.port.take_one(resp, "+CCHO", parse)

    def _open_channel(self) -> None:
        cmd = f'AT+CCHO="{self.aid.hex().upper()}"'
        for attempt in (0, 1):
            try:
                resp = self.port.command(cmd)
                session = self._session_of(resp)
                break
            except TransportError as exc:
                refused = exc.code == "modem.error" or (
                    exc.code == "modem.cme_error" and exc.details.get("cme") == 4
                )
                profile = self.port.profile
                if refused and (
                    exc.code == "modem.cme_error" or (profile is not None and not profile.card.ccho)
                ):
                    raise TransportError(
                        "modem.not_supported", "the modem does not offer AT+CCHO", port=self.port.path
                    ) from None
                if attempt or exc.code not in _RETRY_CODES:
                    raise
                # the modem may have opened a channel whose answer we did not take: close it
                self._close_orphans(exc)
                self.retries += 1
        self.session = session
        self._generation = self.port.generation
        self._worked = False
        if self.channel_record is not None:
            self.channel_record.add(f"ccho:{session}")
        log.debug("AT port %s: CCHO session opened", self.port.path)

    def _close_orphans(self, exc: TransportError) -> None:
        lines = self.port.partial if exc.code == "modem.timeout" else []
        try:
            orphan = self._session_of(AtResponse("", list(lines))) if lines else None
        except TransportError:
            orphan = None
        if orphan is not None:
            try:
                self.port.command(f"AT+CCHC={orphan}")
            except TransportError as err:
                log.info("AT port %s: closing an unanswered session failed (%s)", self.port.path, err.code)

    def transmit(self, apdu: bytes) -> bytes:
        _check_apdu(apdu)
        data = bytes([_cla_channel_zero(apdu[0])]) + bytes(apdu[1:])
        h = data.hex().upper()
        if self.session is None:
            self._open_channel()
        for attempt in (0, 1):
            try:
                resp = self.port.command(
                    f'AT+CGLA={self.session},{len(h)},"{h}"', generation=self._generation
                )
                out = _parse_len_hex(self.port, resp, "+CGLA")
                self._worked = True
                return out
            except TransportError as exc:
                if self._worked and _session_unknown(exc):
                    # the session answered before and the modem does not know it now: it
                    # restarted without a word (TS 27.007 9.2.1: 21 invalid index)
                    self.port.mark_reset("+CGLA session unknown")
                    self._forget()
                    raise TransportError(
                        "modem.reopened", "the modem no longer knows the channel session", port=self.port.path
                    ) from None
                if exc.code == "modem.reopened":
                    # the modem was reset or unplugged and is back: its channels are gone; this
                    # APDU fails, the next one opens ours again
                    self._forget()
                    raise
                if attempt or exc.code not in _RETRY_CODES or not _idempotent(apdu):
                    raise
                self.retries += 1
        raise AssertionError("unreachable")

    def _forget(self) -> None:
        if self.session is not None and self.channel_record is not None:
            self.channel_record.discard(f"ccho:{self.session}")
        self.session = None

    def close(self) -> None:
        """Close the channel (AT+CCHC) when the modem has the command; the port stays open."""
        session = self.session
        profile = self.port.profile
        if session is None:
            return
        if self._generation != self.port.generation or not self.port.is_open:
            self._forget()
            return
        if profile is not None and not profile.card.cchc:
            self._forget()
            return
        try:
            self.port.command(f"AT+CCHC={session}")
        except TransportError as exc:
            log.info("AT port %s: AT+CCHC failed (%s)", self.port.path, exc.code)
            if exc.code in ("modem.gone", "modem.timeout", "modem.desync"):
                self.session = None
                return  # not known to be closed: the record stays for the next start
        self._forget()


def _take_tty_exclusively(ser: Any, on: bool = True) -> None:
    """TIOCEXCL (tty_ioctl(4)): while we hold the port, any other open(2) of the tty fails
    with EBUSY (unless CAP_SYS_ADMIN), so a second reader cannot steal the modem's answers;
    pyserial's exclusive=True is only an advisory flock. TIOCNXCL before closing, so the
    flag does not outlive us on a tty that someone else keeps open."""
    import fcntl
    import termios

    try:
        fcntl.ioctl(ser.fileno(), termios.TIOCEXCL if on else termios.TIOCNXCL)
    except (OSError, ValueError, AttributeError) as exc:  # not a tty, or already closed
        if on:
            log.warning("AT port: TIOCEXCL failed (%s); other processes may open it", type(exc).__name__)


def open_modem_transport(
    path: str,
    profile: Profile | str | None = None,
    on_urc: Callable[[str], None] | None = None,
    **port_kw: Any,
) -> CsimTransport:
    """The card transport of a modem at ``path``: an AtPort with the profile, then AT+CSIM."""
    port = AtPort(path, profile=profile, on_urc=on_urc, **port_kw)
    try:
        return CsimTransport(port)
    except BaseException:
        port.close()
        raise


def enable_ims_reporting(port: AtPort) -> list[str]:
    """Send the profile's IMS/SRVCC reporting commands (AT+CIREP=1, AT+CIREG=2 ...).

    The accepted ones are kept in ``port.after_setup``: a modem reset clears them (TS 27.007
    8.64: +CIREP is not saved), so the port sends them again after every set-up.
    Returns the commands the modem refused (ERROR / +CME ERROR); other failures raise.
    """
    refused: list[str] = []
    commands = port.profile.ims.commands if port.profile and port.profile.ims else ("AT+CIREP=1",)
    for cmd in commands:
        try:
            port.command(cmd)
        except TransportError as exc:
            if exc.code not in ("modem.error", "modem.cme_error"):
                raise
            refused.append(cmd)
            continue
        if cmd not in port.after_setup:
            port.after_setup.append(cmd)
    return refused
