"""The AT modem edge: a serial AT port (pyserial) and APDU transports over AT+CSIM and AT+CCHO/+CGLA.

:class:`AtPort` owns the port: a reader thread splits lines, :meth:`AtPort.command` sends one
command and waits, bounded, for its final result (``OK``, ``ERROR``, ``+CME ERROR: n``,
``+CMS ERROR: n``). Lines that do not belong to the pending command (``+CIREPH``, ``+CIREPI``,
``+CIREGU``, any other prefix) go to ``on_urc`` as they arrive, also in the middle of a
+CSIM/+CGLA transaction. The parser is tolerant of the dialects recorded in ``hw_profiles/``:
echo, spacing after the colon, missing quotes, missing prefixes, a wrong length field and
long lines.

APDU hex never reaches a log or an exception: AUTHENTICATE answers carry RES, CK and IK.
Runs of hex are replaced by ``<hex:N>`` wherever a line is logged or quoted.

Error codes (:class:`ue_agent.errors.TransportError`): ``modem.error``, ``modem.cme_error``
(``details['cme']``), ``modem.cms_error``, ``modem.timeout``, ``modem.garbage``, ``modem.gone``,
``modem.not_supported``, ``modem.reopened``, ``modem.bad_apdu``, ``modem.bad_command``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ue_agent.card.transport import ApduTransport
from ue_agent.errors import ConfigError, TransportError
from ue_agent.profiles import STANDARD_URCS, AtDialect, Profile, resolve

log = logging.getLogger(__name__)

_HEX_RUN = re.compile(r"[0-9A-Fa-f]{8,}")
_FINAL_CME = re.compile(r"^\+CME ERROR:\s*(.*)$", re.IGNORECASE)
_FINAL_CMS = re.compile(r"^\+CMS ERROR:\s*(.*)$", re.IGNORECASE)
_PREFIX = re.compile(r"^([+^#$%*][A-Za-z0-9_]+)\s*:")
#: "<len>,"<hex>"" with or without prefix, spaces and quotes (ModemManager's Telit +CSIM tests,
#: https://github.com/estkme-group/lpac/pull/238 and /pull/445).
_LEN_HEX = re.compile(r'^\s*(\d+)\s*,\s*"?\s*([0-9A-Fa-f]*)\s*"?\s*$')
_SESSION = re.compile(r'^\s*"?([0-9A-Za-z]+)"?\s*$')
_BARE_URCS = ("RING", "NO CARRIER")
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
    lines: list[str] = field(default_factory=list)
    final: str | None = None
    done: bool = False


@dataclass
class AtResponse:
    """Information lines of one command (echo, URCs and the final result removed)."""

    command: str
    lines: list[str]


class AtPort:
    """One AT command port. Thread-safe: one command at a time; URCs on the reader thread.

    ``profile`` (a :class:`Profile` or a name) supplies init/shutdown commands, forbidden
    commands, vendor URC prefixes and the command timeout. ``init=False`` skips the init
    sequence (tests that want the modem's power-on echo).
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
    ) -> None:
        self.path = str(path)
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
        self._closed = False
        #: increases every time the port is (re)opened; channel sessions of an older generation are dead.
        self.generation = 0
        with self._cmd_lock:
            self._open()

    # --- lifecycle ------------------------------------------------------------------------------

    def _open(self) -> None:
        import serial  # pyserial, imported only when a modem is used

        try:
            ser = serial.Serial(self.path, self.baudrate, timeout=0.2, write_timeout=2.0, exclusive=True)
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
        self.generation += 1
        self._reader = threading.Thread(
            target=self._read_loop, args=(ser,), name=f"at-reader:{self.path}", daemon=True
        )
        self._reader.start()
        log.info("AT port %s open (profile %s)", self.path, self.profile.name if self.profile else "-")
        if self._do_init:
            self._initialize()

    def _initialize(self) -> None:
        self._sync()
        advisory = ("ATE0", "AT+CMEE=1")  # nice to have; the parser copes without them
        for cmd in dict.fromkeys(("ATE0", "AT+CMEE=1", *self.dialect.init)):
            try:
                self._command_locked(cmd, self.timeout)
            except TransportError as exc:
                if exc.code in ("modem.gone", "modem.timeout") or cmd not in advisory:
                    raise
                log.warning("AT port %s: %s failed at init (%s)", self.path, cmd, exc.code)

    def _sync(self) -> None:
        """Get the modem's attention: a few plain 'AT' until one answers OK."""
        last: TransportError | None = None
        for _ in range(3):
            try:
                self._command_locked("AT", min(self.timeout, 2.0))
                return
            except TransportError as exc:
                if exc.code == "modem.gone":
                    raise
                last = exc
        assert last is not None
        raise last

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

    # --- reader thread ------------------------------------------------------------------------------

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
            if not chunk:
                continue
            buf += chunk
            while True:
                cut = min((i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0), default=-1)
                if cut < 0:
                    break
                raw = bytes(buf[:cut])
                del buf[: cut + 1]
                line = raw.decode("utf-8", errors="replace").strip()
                if line:
                    self._on_line(line)
            if len(buf) > _MAX_BUFFER:
                log.warning("AT port %s: dropping %d bytes without a line end", self.path, len(buf))
                buf.clear()
                self._on_line("\ufffd<overlong>")
        with self._cond:
            if ser is self._ser or self._ser is None:
                self._gone = True
            self._cond.notify_all()
        log.info("AT port %s: reader stopped", self.path)

    def _on_line(self, line: str) -> None:
        urc = False
        with self._cond:
            p = self._pending
            if p is None or p.done:
                urc = True
            else:
                upper = line.upper()
                if upper == p.command.upper():
                    return  # echo
                if upper in ("OK", "ERROR") or _FINAL_CME.match(line) or _FINAL_CMS.match(line):
                    p.final = line
                    p.done = True
                    self._cond.notify_all()
                    return
                m = _PREFIX.match(line)
                foreign = m is not None and (p.prefix is None or m.group(1).upper() != p.prefix)
                if foreign or upper.startswith(self._urc_prefixes) or upper in _BARE_URCS:
                    urc = True
                else:
                    p.lines.append(line)
        if urc:
            if line.upper() in ("OK", "ERROR"):
                log.debug("AT port %s: stray %s dropped", self.path, line)
                return
            self._deliver_urc(line)

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
                if generation is not None and generation != self.generation:
                    raise TransportError(
                        "modem.reopened", f"AT port {self.path} was reopened", port=self.path
                    )
                try:
                    if self._stale:
                        self._stale = False
                        self._sync()
                    return self._command_locked(cmd, timeout if timeout is not None else self.timeout)
                except _NotSent:
                    # the write failed: the modem never saw the command; once more on the new port
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def _command_locked(self, cmd: str, timeout: float) -> AtResponse:
        m = re.match(r"^AT([+^#$%*][A-Za-z0-9_]+)", cmd, re.IGNORECASE)
        pending = _Pending(command=cmd, prefix=m.group(1).upper() if m else None)
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
            raise TransportError(
                "modem.timeout",
                f"no final result to {redact(cmd)[:40]} within {timeout:g} s",
                port=self.path,
                timeout_s=timeout,
            )
        final = pending.final or ""
        log.debug("AT port %s: < %d line(s), %s", self.path, len(pending.lines), redact(final))
        if final.upper() == "OK":
            return AtResponse(cmd, pending.lines)
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
        """The first information line matching ``pattern`` after ``prefix`` (or bare, when allowed).

        Lines that do not match are handed to ``on_urc`` (they were not this command's).
        Nothing matching -> modem.garbage.
        """
        found: re.Match[str] | None = None
        rest: list[str] = []
        for line in resp.lines:
            body: str | None = None
            if line.upper().startswith(prefix.upper()):
                after = line[len(prefix) :].lstrip()
                body = after[1:] if after.startswith(":") else None
            elif bare:
                body = line
            m = pattern.match(body) if body is not None and found is None else None
            if m:
                found = m
            else:
                rest.append(line)
        if found is None:
            raise TransportError(
                "modem.garbage",
                f"no {prefix} answer in {len(resp.lines)} line(s)",
                port=self.path,
                lines=[redact(x)[:60] for x in resp.lines[:4]],
            )
        self._deliver_leftovers(rest)
        return found

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


def _parse_len_hex(port: AtPort, m: re.Match[str], what: str) -> bytes:
    length, hexdata = int(m.group(1)), m.group(2)
    if len(hexdata) % 2 or len(hexdata) < 4:
        raise TransportError("modem.garbage", f"{what} answer is not data||SW", port=port.path)
    if length not in (len(hexdata), len(hexdata) // 2):
        # ModemManager's Telit parser does not trust it either; the data are what counts.
        log.debug("AT port %s: %s length field %d for %d hex chars", port.path, what, length, len(hexdata))
    return bytes.fromhex(hexdata)


class CsimTransport(ApduTransport):
    """APDUs over AT+CSIM on the modem's basic channel (TS 27.007 8.17).

    ``bind_application(aid)`` gives a :class:`CglaTransport` when the profile reaches the
    card through AT+CCHO/+CGLA, and refuses (NotImplementedError) otherwise: the card layer
    then selects the application itself.
    """

    mode = "basic"

    def __init__(self, port: AtPort, *, probe: bool = True) -> None:
        self.port = port
        self.name = f"at:{port.path}"
        profile = port.profile
        # "bound": the card layer reaches applications through bind_application() (AT+CCHO/+CGLA);
        # the basic channel (+CSIM) still serves EF_DIR and the MF files.
        self.mode = "bound" if profile is not None and profile.access == "cgla" else "basic"
        self.use_logical_channel = bool(
            profile and profile.card.logical_channels == "manage_channel" and profile.access == "csim"
        )
        if profile and not profile.card.csim:
            raise TransportError(
                "modem.not_supported", f"profile {profile.name} has no AT+CSIM", port=port.path
            )
        if probe and not port.probe("+CSIM"):
            raise TransportError("modem.not_supported", "the modem does not offer AT+CSIM", port=port.path)

    def transmit(self, apdu: bytes) -> bytes:
        _check_apdu(apdu)
        h = bytes(apdu).hex().upper()
        try:
            resp = self.port.command(f'AT+CSIM={len(h)},"{h}"')
        except TransportError as exc:
            if exc.code == "modem.cme_error" and exc.details.get("cme") == 4:
                raise TransportError(
                    "modem.not_supported", "AT+CSIM: operation not supported", port=self.port.path
                ) from None
            raise
        return _parse_len_hex(self.port, self.port.take(resp, "+CSIM", _LEN_HEX), "+CSIM")

    def bind_application(self, aid: bytes) -> ApduTransport:
        profile = self.port.profile
        if profile is None or profile.access != "cgla":
            raise NotImplementedError("this modem profile reaches the card through AT+CSIM only")
        return CglaTransport(self.port, aid)

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
    handle). When the port was reopened since (modem unplugged and back), the channel is
    opened again before the next APDU.
    """

    mode = "bound"

    def __init__(self, port: AtPort, aid: bytes) -> None:
        if not 5 <= len(aid) <= 16:
            raise TransportError("modem.bad_apdu", "AID must be 5..16 bytes", length=len(aid))
        self.port = port
        self.aid = bytes(aid)
        self.name = f"at:{port.path}:cgla"
        self.session: str | None = None
        self._generation = -1
        self._open_channel()

    def _open_channel(self) -> None:
        try:
            resp = self.port.command(f'AT+CCHO="{self.aid.hex().upper()}"')
        except TransportError as exc:
            refused = exc.code == "modem.error" or (
                exc.code == "modem.cme_error" and exc.details.get("cme") == 4
            )
            if refused and not self.port.probe("+CCHO"):
                raise TransportError(
                    "modem.not_supported", "the modem does not offer AT+CCHO", port=self.port.path
                ) from None
            raise
        self.session = self.port.take(resp, "+CCHO", _SESSION).group(1)
        self._generation = self.port.generation
        log.debug("AT port %s: CCHO session opened", self.port.path)

    def transmit(self, apdu: bytes) -> bytes:
        _check_apdu(apdu)
        data = bytes([_cla_channel_zero(apdu[0])]) + bytes(apdu[1:])
        h = data.hex().upper()
        for attempt in (0, 1):
            if self.session is None:
                self._open_channel()
            try:
                resp = self.port.command(
                    f'AT+CGLA={self.session},{len(h)},"{h}"', generation=self._generation
                )
            except TransportError as exc:
                if exc.code != "modem.reopened" or attempt:
                    raise
                # the modem was unplugged and is back: its channels are gone, open ours again
                self.session = None
                continue
            return _parse_len_hex(self.port, self.port.take(resp, "+CGLA", _LEN_HEX), "+CGLA")
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the channel (AT+CCHC) when the modem has the command; the port stays open."""
        session, self.session = self.session, None
        profile = self.port.profile
        if session is None or self._generation != self.port.generation or not self.port.is_open:
            return
        if profile is not None and not profile.card.cchc:
            return
        try:
            self.port.command(f"AT+CCHC={session}")
        except TransportError as exc:
            log.info("AT port %s: AT+CCHC failed (%s)", self.port.path, exc.code)


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
    return refused
