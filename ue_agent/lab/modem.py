"""A modem simulator on a pty, in front of a soft UICC, speaking the AT dialect of a hardware profile.

The simulator holds the pty master; clients (pyserial, minicom, the agent) open the slave
by path, through a symlink (``link_path``). It answers V.250 basics (AT, ATE0/1, ATZ, ATI,
AT+CMEE) and the SIM commands of TS 27.007: +CSIM, +CCHO/+CGLA/+CCHC, +CRSM, plus +CIREP
and +CIREG with their URCs. The profile's quirks are replayed: echo after power-on, no space
after the colon, bare +CCHO/+CGLA answers, opaque session handles, refused ``=?`` test
commands, a wrong +CSIM length field, the modem doing GET RESPONSE itself, a +CSIM lock
command (Telit), commands that reboot the modem.

Test hooks: :meth:`ModemSimulator.emit_urc` (now, or in the middle of the next answer),
:meth:`ModemSimulator.fail_next` (ERROR, +CME ERROR, garbage, silence, vanish),
:meth:`ModemSimulator.reply_next` (a raw answer), :meth:`ModemSimulator.vanish` (unplug),
:meth:`ModemSimulator.shape_next` (transport behaviour seen on real modems, replayed on one
answer: late, split, noise, NULs, CR-only lines, SIM busy, a missing OK, no length field),
:meth:`ModemSimulator.reset_modem` (the modem restarts: settings, channels and the UICC
reset, ``RDY`` and friends printed). ``verbose_default=False`` powers the modem on in ATV0
(numeric result codes); ``silent_test_commands`` never answers ``=?``.
APDU hex is never logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import select
import signal
import stat
import sys
import threading
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ue_agent.errors import ConfigError
from ue_agent.profiles import AtDialect, CardAccess, Profile, resolve

log = logging.getLogger(__name__)

#: +CME ERROR codes used (TS 27.007 9.2.1).
CME_NOT_ALLOWED = 3
CME_NOT_SUPPORTED = 4
CME_SIM_NOT_INSERTED = 10
CME_SIM_PUK_REQUIRED = 12
CME_SIM_FAILURE = 13
CME_INCORRECT_PASSWORD = 16
CME_INVALID_INDEX = 21
CME_INCORRECT_PARAMETERS = 50
_CME_TEXT = {
    CME_NOT_ALLOWED: "operation not allowed",
    CME_NOT_SUPPORTED: "operation not supported",
    CME_SIM_NOT_INSERTED: "SIM not inserted",
    CME_SIM_PUK_REQUIRED: "SIM PUK required",
    CME_SIM_FAILURE: "SIM failure",
    CME_INCORRECT_PASSWORD: "incorrect password",
    CME_INVALID_INDEX: "invalid index",
    CME_INCORRECT_PARAMETERS: "incorrect parameters",
}
FAULT_KINDS = ("error", "cme_error", "garbage", "silence", "vanish")
CME_SIM_BUSY = 14
#: transport behaviours :meth:`ModemSimulator.shape_next` replays (issue 9 transcripts)
SHAPE_KINDS = ("late", "noise", "nul", "cr_only", "busy", "missing_ok", "no_length")
#: what modems print on their own after power-up, and bare numbers seen before answers
RESET_URCS = ("RDY", "+CPIN: READY", "SMS DONE", "PB DONE")


@dataclass
class _Shape:
    kind: str
    match: str  # the command line starts with this (upper case)
    skip: int  # matching commands to let pass first
    params: dict


class _Fail(Exception):
    """Answer the current command with ERROR / +CME ERROR: n."""

    def __init__(self, cme: int | None = None) -> None:
        super().__init__(cme)
        self.cme = cme


@dataclass
class _Channel:
    number: int
    session: str


def _cla_for_channel(cla: int, n: int) -> int:
    """TS 102 221 10.1.1: channels 0-3 in b2b1, 4-19 in the further interindustry coding."""
    if n < 4:
        return (cla & 0xBC) | n
    return 0x40 | (cla & 0x10) | (n - 4)


def _params(text: str) -> list[str]:
    """Split an AT parameter list on commas outside quotes; quotes removed, spaces trimmed."""
    out: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur).strip())
            cur = []
            continue
        else:
            cur.append(ch)
    if quoted:
        raise _Fail(CME_INCORRECT_PARAMETERS)
    out.append("".join(cur).strip())
    return out


def _shape_params(words: list[str]) -> dict[str, Any]:
    """``key=value`` words of a ``!shape`` control line: skip/pieces integers, delay/gap
    seconds, lines ``|``-separated (``lines=RDY|0,1``), match as written."""
    out: dict[str, Any] = {}
    for word in words:
        key, _, value = word.partition("=")
        if key in ("skip", "pieces"):
            out[key] = int(value)
        elif key in ("delay", "gap"):
            out[key] = float(value)
        elif key == "lines":
            out[key] = value.split("|")
        else:
            out[key] = value
    return out


def _hex_param(text: str) -> bytes:
    if len(text) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", text):
        raise _Fail(CME_INCORRECT_PARAMETERS)
    return bytes.fromhex(text)


class ModemSimulator:
    """A modem with a soft UICC on a pty. ``start()`` creates the pty and the symlink."""

    def __init__(
        self, uicc, profile: Profile | str | None = None, link_path: str | Path | None = None
    ) -> None:
        self.uicc = uicc
        self.profile: Profile = resolve(profile, "generic-at")  # type: ignore[assignment]
        if self.profile.kind != "at":
            raise ConfigError(
                "config.invalid", f"profile {self.profile.name} is not an AT modem", key="profile"
            )
        self.dialect: AtDialect = self.profile.at or AtDialect()
        self.card: CardAccess = self.profile.card
        self.link_path = Path(link_path) if link_path else None
        self.slave_path: str | None = None
        self.commands: list[str] = []  # command lines received (names only for SIM commands' data)
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._control_fd: int | None = None
        self._control_buf = b""
        self._lock = threading.RLock()  # serializes writes to the master
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._faults: list[tuple[str, int | None, str | None]] = []
        self._urcs_during: list[str] = []
        self._next_handle = 0x385A7CF  # opaque +CCHO handles (Sierra): never reused, even across replugs
        self._shapes: list[_Shape] = []
        #: V.250 V setting after power-on: False = ATV0, numeric result codes
        self.verbose_default = True
        #: "=?" test commands get no answer at all (some modems)
        self.silent_test_commands = False
        self.resets = 0
        self._power_on()

    def _power_on(self) -> None:
        self.verbose = getattr(self, "verbose_default", True)
        self.echo = self.dialect.echo_default
        self.cmee = 0
        self.cirep = 0
        self.cireg = 0
        self.csim_locked = not self._needs_lock()
        self._channels: dict[str, _Channel] = {}
        self._pending_get_response = b""

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ModemSimulator:
        """Create the pty (and the symlink), and serve it on a thread. Callable again after vanish()."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._power_on()
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link_path is not None:
            self._replace_link(self.slave_path)
        self._thread = threading.Thread(target=self._serve, name="modem-sim", daemon=True)
        self._thread.start()
        log.info("modem simulator (%s) on %s", self.profile.name, self.link_path or self.slave_path)
        return self

    def _replace_link(self, target: str) -> None:
        assert self.link_path is not None
        tmp = self.link_path.with_name(f".{self.link_path.name}.{os.getpid()}.tmp")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, self.link_path)

    def _remove_link(self) -> None:
        if self.link_path is None:
            return
        try:
            if self.link_path.is_symlink():
                self.link_path.unlink()
        except FileNotFoundError:
            pass

    def stop(self) -> None:
        """Stop serving, close the pty and remove the symlink. Idempotent."""
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # already closed
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self._close_pty()

    def close(self) -> None:
        self.stop()
        for fd in (self._wake_r, self._wake_w, self._control_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._control_fd = None
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> ModemSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _close_pty(self) -> None:
        with self._lock:
            self._remove_link()
            for fd in (self._master, self._slave):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._master = self._slave = None

    def vanish(self) -> None:
        """Unplug: the master closes (clients get EIO) and the path disappears."""
        log.info("modem simulator: vanishing")
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._close_pty()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            self._thread = None

    def set_control(self, path: str | Path) -> None:
        """Read URC lines (and ``!fail KIND [n]``, ``!vanish``, ``!srvcc N``, ``!reset [silent]``,
        ``!shape KIND [key=value ...]``) from a FIFO at ``path``."""
        path = Path(path)
        if path.exists() and not stat.S_ISFIFO(path.stat().st_mode):
            raise ConfigError("config.invalid", f"{path} exists and is not a FIFO", key="control")
        if not path.exists():
            os.mkfifo(path, 0o600)
        # O_RDWR: the FIFO never reports EOF when a writer goes away.
        self._control_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)

    # --- test hooks ---------------------------------------------------------------------------------

    def emit_urc(self, line: str, *, during_next_command: bool = False) -> None:
        """Write an unsolicited line now, or inside the answer to the next command."""
        if during_next_command:
            with self._lock:
                self._urcs_during.append(line)
            return
        self._write(f"\r\n{line}\r\n")

    def srvcc(self, state: int) -> bool:
        """Report an SRVCC handover state (+CIREPH) if the TE enabled +CIREP reporting."""
        if not self.cirep:
            return False
        self.emit_urc(f"+CIREPH:{' ' if self.dialect.colon_space else ''}{state}")
        return True

    def fail_next(self, kind: str, code: int | None = None) -> None:
        """The next command fails: "error", "cme_error" (code, default 13), "garbage",
        "silence" (no answer at all) or "vanish" (unplug instead of answering)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}")
        if kind == "cme_error" and code is None:
            code = 13  # SIM failure
        with self._lock:
            self._faults.append((kind, code, None))

    def shape_next(self, kind: str, match: str = "AT+C", skip: int = 0, **params: object) -> None:
        """Replay one transport behaviour on the answer to the next command starting with ``match``
        (after ``skip`` such commands). Kinds:

        - ``late``: the answer comes ``delay`` s late (the modem does nothing else meanwhile),
          in ``pieces`` chunks ``gap`` s apart;
        - ``noise``: ``lines`` (default ``RDY``, ``0,1``) ``where`` = before / between / after
          the answer's lines;
        - ``nul``: NUL bytes after the information line and before the final OK;
        - ``cr_only``: CR-only lines before, between and after;
        - ``busy``: ``+CME ERROR: 14`` (SIM busy), the command not run;
        - ``missing_ok``: the answer without its final result code (the command ran);
        - ``no_length``: ``+CSIM: "<hex>"`` without the length field.
        """
        if kind not in SHAPE_KINDS:
            raise ValueError(f"shape kind must be one of {SHAPE_KINDS}")
        with self._lock:
            self._shapes.append(_Shape(kind, match.upper(), skip, dict(params)))

    def reset_modem(self, urcs: tuple[str, ...] = RESET_URCS, *, card: bool = True) -> None:
        """The modem restarts in place: settings back to power-on (echo, V, CMEE, CIREP),
        its channel sessions gone, the UICC reset (``card``), then ``urcs`` printed."""
        with self._lock:
            self._power_on()
            self.resets += 1
        if card:
            self.uicc.reset()
            # a card with PIN1 enabled comes back asking for it (TS 27.007 8.3 +CPIN URC)
            code = self._cpin_code()
            urcs = tuple(f"+CPIN: {code}" if u.upper() == "+CPIN: READY" else u for u in urcs)
        for line in urcs:
            self.emit_urc(line)

    @property
    def pending_shapes(self) -> int:
        """Behaviours queued with shape_next() not replayed yet."""
        with self._lock:
            return len(self._shapes)

    def _take_shape(self, line: str) -> _Shape | None:
        upper = line.upper()
        with self._lock:
            for i, shape in enumerate(self._shapes):
                if upper.startswith(shape.match):
                    if shape.skip:
                        shape.skip -= 1
                        return None
                    return self._shapes.pop(i)
        return None

    def reply_next(self, raw: str) -> None:
        """The next command is answered with exactly ``raw`` (CR/LF included by the caller)."""
        with self._lock:
            self._faults.append(("raw", None, raw))

    # --- I/O loop -----------------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        with self._lock:
            fd = self._master
            if fd is None:
                return
            data = text.encode("utf-8", errors="replace")
            while data:
                try:
                    n = os.write(fd, data)
                except BlockingIOError:
                    select.select([], [fd], [], 1.0)
                    continue
                except OSError:
                    return
                data = data[n:]

    def _serve(self) -> None:
        buf = b""
        master = self._master
        while not self._stop.is_set() and master is not None:
            fds = [master, self._wake_r] + ([self._control_fd] if self._control_fd is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], 1.0)
            except (OSError, ValueError):
                break
            if self._wake_r in ready:
                os.read(self._wake_r, 64)
            if self._control_fd is not None and self._control_fd in ready:
                self._read_control()
            if master in ready:
                try:
                    chunk = os.read(master, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                buf += chunk
                while True:
                    m = re.search(rb"[\r\n]", buf)
                    if not m:
                        break
                    raw, buf = buf[: m.start()], buf[m.end() :]
                    line = raw.decode("ascii", errors="replace").strip()
                    if line and not self._stop.is_set():
                        self._handle(line)
                if len(buf) > 65536:
                    buf = b""

    def _read_control(self) -> None:
        assert self._control_fd is not None
        try:
            self._control_buf += os.read(self._control_fd, 4096)
        except BlockingIOError:
            return
        while b"\n" in self._control_buf:
            raw, self._control_buf = self._control_buf.split(b"\n", 1)
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            if line.startswith("!"):
                self._control_command(line[1:].split())
            else:
                self.emit_urc(line)

    def _control_command(self, words: list[str]) -> None:
        try:
            if words[0] == "fail":
                self.fail_next(words[1], int(words[2]) if len(words) > 2 else None)
            elif words[0] == "srvcc":
                self.srvcc(int(words[1]))
            elif words[0] == "vanish":
                threading.Thread(target=self.vanish, daemon=True).start()
            elif words[0] == "reset":  # !reset [silent]: the modem restarts (RDY... unless silent)
                self.reset_modem(urcs=() if words[1:2] == ["silent"] else RESET_URCS)
            elif words[0] == "shape":  # !shape KIND [key=value ...]: see shape_next()
                self.shape_next(words[1], **_shape_params(words[2:]))
            else:
                log.warning("modem control: unknown command %r", words[0])
        except (IndexError, ValueError) as exc:
            log.warning("modem control: bad command (%s)", exc)

    # --- command interpreter -----------------------------------------------------------------------

    def _handle(self, line: str) -> None:
        # APDU hex stays out of the record: SIM commands are kept by name only
        sim_cmd = re.match(r"^AT\+(CSIM|CGLA)=.*,", line, re.IGNORECASE)
        secret = re.match(r"^(AT\+(?:CPIN|CPWD|CLCK)=)", line, re.IGNORECASE)  # a PIN/PUK: never recorded
        if secret:
            self.commands.append(secret.group(1).upper() + "<redacted>")
        else:
            self.commands.append(f"AT+{sim_cmd.group(1).upper()}" if sim_cmd else line)
        if self.echo:
            self._write(line + "\r")
        if self.silent_test_commands and line.endswith("=?"):
            return
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
            during = list(self._urcs_during)
            self._urcs_during.clear()
        shape = self._take_shape(line) if fault is None else None
        info: list[str]
        if fault is not None:
            kind, code, raw = fault
            if kind == "silence":
                return
            if kind == "vanish":
                self._stop.set()
                self._close_pty()
                return
            if kind == "raw":
                self._write(raw or "")
                return
            if kind == "garbage":
                self._write("\r\n\x7f#$%^ garbled \xff\u00fe\r\n\r\nOK\r\n")
                return
            info, final = (
                [],
                self._error(code if kind == "cme_error" else None, force_cme=kind == "cme_error"),
            )
        elif shape is not None and shape.kind == "busy":
            info, final = [], f"+CME ERROR: {CME_SIM_BUSY}"
        else:
            try:
                info = self._dispatch(line)
                final = "OK"
            except _Fail as f:
                info, final = [], self._error(f.cme)
        if shape is not None and shape.kind == "no_length":
            info = [re.sub(r"^(\+CSIM:\s*)\d+\s*,", r"\1", x) for x in info]
        self._answer(info, final, during, shape)

    def _answer(self, info: list[str], final: str, during: list[str], shape: _Shape | None) -> None:
        """Write the answer as the modem would: V1 framing (CR LF text CR LF) or V0 (text CR LF,
        numeric final result code CR), URCs between the lines, and the shape's behaviour."""
        if self.verbose:
            lines = [f"\r\n{t}\r\n" for t in info]
            fin = f"\r\n{final}\r\n"
        else:
            lines = [f"{t}\r\n" for t in info]
            fin = {"OK": "0\r", "ERROR": "4\r"}.get(final, f"{final}\r\n")
        out: list[str] = []
        if during and not info:
            out += [f"\r\n{u}\r\n" for u in during]
        for i, piece in enumerate(lines):
            out.append(piece)
            if i == 0 and during:
                out += [f"\r\n{u}\r\n" for u in during]
        kind = shape.kind if shape is not None else None
        params = shape.params if shape is not None else {}
        if kind == "noise":
            noise = [f"\r\n{n}\r\n" for n in params.get("lines", ("RDY", "0,1"))]
            where = params.get("where", "before")
            at = 0 if where == "before" else len(out) if where == "after" else min(1, len(out))
            out[at:at] = noise
        elif kind == "nul":
            out = [p + "\x00" for p in out] + ["\x00"]
        elif kind == "cr_only":
            out = ["\r\r"] + [p + "\r" for p in out]
        if kind != "missing_ok":
            out.append(fin)
        if kind == "nul":
            out.append("\x00\r\n")
        if kind == "late":
            import time

            time.sleep(float(params.get("delay", 1.0)))
            text = "".join(out)
            n = max(1, int(params.get("pieces", 1)))
            step = -(-len(text) // n)
            for k in range(0, len(text), step):
                self._write(text[k : k + step])
                time.sleep(float(params.get("gap", 0.0)))
            return
        # one write per piece: URCs really arrive between the answer's lines
        for piece in out:
            self._write(piece)

    def _error(self, cme: int | None, force_cme: bool = False) -> str:
        if cme is None:
            return "ERROR"
        if force_cme or self.cmee == 1:
            return f"+CME ERROR: {cme}"
        if self.cmee == 2:
            return f"+CME ERROR: {_CME_TEXT.get(cme, 'unknown')}"
        return "ERROR"

    def _p(self, name: str, body: str) -> str:
        return f"{name}:{' ' if self.dialect.colon_space else ''}{body}"

    def _dispatch(self, line: str) -> list[str]:
        u = line.upper()
        if not u.startswith("AT"):
            raise _Fail()
        rest = line[2:]
        ru = rest.upper()
        if ru == "":
            return []
        if ru in ("E0", "E1", "E"):
            self.echo = ru == "E1"
            return []
        if ru in ("V0", "V1", "V"):
            self.verbose = ru == "V1"  # V.250 6.2.6: the result code of ATV comes in the new form
            return []
        if ru in ("Z", "Z0", "&F"):
            self._power_on()
            self.uicc.reset()
            return []  # the OK of ATZ comes in the power-on format
        identity = self._identity(ru)
        if identity is not None:
            return identity
        query = self.profile.pin
        if query is not None and query.retries_command and line.upper() == query.retries_command.upper():
            return self._pin_retries(query.retries_answer)
        m = re.match(r"^([+^#$%*][A-Z0-9]+)(=\?|\?|=(.*))?$", rest, re.IGNORECASE | re.DOTALL)
        if not m:
            raise _Fail()
        cmd, form, args = m.group(1).upper(), m.group(2) or "", m.group(3)
        if form == "=?" and cmd in (c.upper() for c in self.dialect.no_test_commands):
            raise _Fail()  # the quirk: the command works, its test form does not
        handler = {
            "+CMEE": self._cmee,
            "+CSIM": self._csim,
            "+CCHO": self._ccho,
            "+CCHC": self._cchc,
            "+CGLA": self._cgla,
            "+CRSM": self._crsm,
            "+CIREP": self._cirep,
            "+CIREG": self._cireg,
            "+CPIN": self._cpin,
        }.get(cmd)
        if handler is None:
            if self._forbidden(cmd):
                # these commands reboot the real modem (oFono drivers/atmodem/sim.c): it drops off the bus
                self._stop.set()
                self._close_pty()
                raise _Fail()
            raise _Fail()
        if cmd in ("+CCHO", "+CCHC", "+CGLA") and not self.card.ccho:
            raise _Fail()
        if cmd == "+CSIM" and not self.card.csim:
            raise _Fail()
        return handler(form, args)

    def _needs_lock(self) -> bool:
        return "AT+CSIM=1" in (c.upper() for c in self.dialect.init)

    def _forbidden(self, cmd: str) -> bool:
        return any(f.upper() == "AT" + cmd for f in self.dialect.forbidden)

    def _cmee(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return [self._p("+CMEE", "(0-2)")]
        if form == "?":
            return [self._p("+CMEE", str(self.cmee))]
        if args not in ("0", "1", "2"):
            raise _Fail(CME_INCORRECT_PARAMETERS)
        self.cmee = int(args)
        return []

    # --- the card ----------------------------------------------------------------------------------

    def _card(self, apdu: bytes) -> bytes:
        resp = self.uicc.process(apdu)
        if not resp:
            raise _Fail(CME_SIM_NOT_INSERTED if getattr(self.uicc, "removed", False) else CME_SIM_FAILURE)
        return resp

    def _exchange(self, apdu: bytes, *, me_handles: bool | None = None) -> bytes:
        """One APDU as the modem passes it: raw (TE handles 61xx) or with GET RESPONSE done here.

        +CRSM always runs the T=0 procedure in the ME (``me_handles=True``)."""
        resp = self._card(apdu)
        if not (self.card.modem_handles_61xx if me_handles is None else me_handles):
            return resp
        data = b""
        for _ in range(32):
            if len(resp) >= 2 and resp[-2] == 0x61:
                data += resp[:-2]
                resp = self._card(bytes([apdu[0], 0xC0, 0x00, 0x00, resp[-1]]))
                continue
            if len(resp) == 2 and resp[0] == 0x6C and len(apdu) == 5:
                apdu = apdu[:4] + resp[1:2]
                resp = self._card(apdu)
                continue
            break
        return data + resp

    def _len_hex(self, data: bytes) -> str:
        h = data.hex().upper()
        length = len(data) if self.dialect.length_field == "bytes" else len(h)
        return f'{length},"{h}"'

    def _csim(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        if form != "=" and form[:1] != "=":
            raise _Fail(CME_INCORRECT_PARAMETERS)
        params = _params(args or "")
        if len(params) == 1 and params[0] in ("0", "1") and self._needs_lock():
            # Telit: AT+CSIM=1 locks SIM access for the TE, AT+CSIM=0 unlocks (ModemManager Telit plugin)
            self.csim_locked = params[0] == "1"
            return []
        if len(params) != 2 or not params[0].isdigit():
            raise _Fail(CME_INCORRECT_PARAMETERS)
        apdu = _hex_param(params[1])
        if int(params[0]) != len(params[1]) or len(apdu) < 4:
            raise _Fail(CME_INCORRECT_PARAMETERS)
        if not self.csim_locked:
            raise _Fail(CME_NOT_ALLOWED)
        return [self._p("+CSIM", self._len_hex(self._exchange(apdu)))]

    def _ccho(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        if not form.startswith("="):
            raise _Fail(CME_INCORRECT_PARAMETERS)
        params = _params(args or "")
        aid = _hex_param(params[0]) if len(params) == 1 else b""
        if not 5 <= len(aid) <= 16:
            raise _Fail(CME_INCORRECT_PARAMETERS)
        opened = self._card(bytes.fromhex("0070000001"))
        if len(opened) != 3 or opened[-2:] != b"\x90\x00":
            raise _Fail(CME_SIM_FAILURE)
        n = opened[0]
        cla = _cla_for_channel(0x00, n)
        resp = self._card(bytes([cla, 0xA4, 0x04, 0x04, len(aid)]) + aid)
        while len(resp) >= 2 and resp[-2] == 0x61:  # the modem drains the FCP itself
            resp = self._card(bytes([cla, 0xC0, 0x00, 0x00, resp[-1]]))
        if resp[-2:] != b"\x90\x00" and resp[-2] != 0x91:
            self._card(bytes([0x00, 0x70, 0x80, n, 0x00]))
            # a card without the target applet: +CME ERROR: 13 (https://github.com/commaai/openpilot/pull/37979)
            raise _Fail(self.card.ccho_missing_app_cme)
        if self.card.session_id == "opaque":
            self._next_handle += 0x1F3
            session = f"{self._next_handle:016x}"
        else:
            session = str(n)
        self._channels[session] = _Channel(n, session)
        return [self._p("+CCHO", session) if self.dialect.ccho_prefix else session]

    def _session(self, text: str) -> _Channel:
        ch = self._channels.get(text.strip().strip('"'))
        if ch is None:
            raise _Fail(CME_INVALID_INDEX)
        return ch

    def _cchc(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        if not self.card.cchc:
            raise _Fail()
        ch = self._session(args or "")
        self._card(bytes([0x00, 0x70, 0x80, ch.number, 0x00]))
        del self._channels[ch.session]
        return []

    def _cgla(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        params = _params(args or "")
        if len(params) != 3 or not params[1].isdigit():
            raise _Fail(CME_INCORRECT_PARAMETERS)
        ch = self._session(params[0])
        apdu = bytearray(_hex_param(params[2]))
        if int(params[1]) != len(params[2]) or len(apdu) < 4:
            raise _Fail(CME_INCORRECT_PARAMETERS)
        apdu[0] = _cla_for_channel(apdu[0] & (0xBC if not apdu[0] & 0x40 else 0x10), ch.number)
        body = self._len_hex(self._exchange(bytes(apdu)))
        return [self._p("+CGLA", body) if self.dialect.cgla_prefix else body]

    def _crsm(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        params = _params(args or "")
        try:
            command = int(params[0])
            fileid = int(params[1]) if len(params) > 1 and params[1] else None
            p1, p2, p3 = (int(x) if x else 0 for x in (params[2:5] + ["", "", ""])[:3])
        except ValueError:
            raise _Fail(CME_INCORRECT_PARAMETERS) from None
        data = _hex_param(params[5]) if len(params) > 5 and params[5] else b""
        pathid = params[6] if len(params) > 6 else ""
        if command == 242:  # STATUS
            resp = self._exchange(bytes([0x80, 0xF2, 0x00, 0x00, p3]), me_handles=True)
        else:
            if fileid is None:
                raise _Fail(CME_INCORRECT_PARAMETERS)
            sel = self._select_path(pathid, fileid)
            if sel[-2:] != b"\x90\x00":
                return [self._p("+CRSM", f"{sel[-2]},{sel[-1]}")]
            if command == 176:
                resp = self._exchange(bytes([0x00, 0xB0, p1, p2, p3]), me_handles=True)
            elif command == 178:
                resp = self._exchange(bytes([0x00, 0xB2, p1, p2, p3]), me_handles=True)
            elif command == 192:
                resp = self._select_path(pathid, fileid, fcp=True)
            elif command == 214:
                resp = self._exchange(bytes([0x00, 0xD6, p1, p2, len(data)]) + data, me_handles=True)
            else:
                raise _Fail(CME_NOT_SUPPORTED)
        sw1, sw2, payload = resp[-2], resp[-1], resp[:-2].hex().upper()
        return [self._p("+CRSM", f'{sw1},{sw2},"{payload}"' if payload else f"{sw1},{sw2}")]

    def _select_path(self, pathid: str, fileid: int, fcp: bool = False) -> bytes:
        """Select ``fileid`` under ``pathid`` (hex FIDs from the MF) on the basic channel."""
        path = _hex_param(pathid) if pathid else b"\x3f\x00"
        fids = [path[i : i + 2] for i in range(0, len(path), 2)] + [fileid.to_bytes(2, "big")]
        resp = b""
        for i, fid in enumerate(fids):
            last = i == len(fids) - 1
            p2 = 0x04 if (last and fcp) else 0x0C
            if fid == b"\x7f\xff":
                aid = bytes.fromhex("A0000000871002")  # the USIM, by partial AID
                resp = self._card(bytes([0x00, 0xA4, 0x04, p2, len(aid)]) + aid)
            else:
                resp = self._card(bytes([0x00, 0xA4, 0x00, p2, 0x02]) + fid)
            if len(resp) >= 2 and resp[-2] == 0x61:
                resp = self._card(bytes([0x00, 0xC0, 0x00, 0x00, resp[-1]])) if last and fcp else b"\x90\x00"
            if resp[-2:] != b"\x90\x00":
                return resp
        return resp

    # --- identity (V.250 I, TS 27.007 5.1-5.3) and PIN1 (TS 27.007 8.3) ----------------------------

    def _identity(self, ru: str) -> list[str] | None:
        """ATI / AT+CGMI / AT+CGMM / AT+CGMR as this family answers them ([match] of the profile)."""
        match = self.profile.match
        vendor = (match.cgmi if match else "") or self.profile.vendor or "ue-agent lab"
        model = (match.cgmm if match else "") or (self.profile.models[:1] or ("modem",))[0]
        if ru in ("I", "I0"):
            return list(match.ati) if match and match.ati else [vendor, model]
        if ru == "+CGMI":
            return [vendor]
        if ru == "+CGMM":
            return [model]
        if ru == "+CGMR":
            return ["ue-agent-lab-1"]
        return None

    def _verify_sw(self, data: bytes = b"") -> int:
        """VERIFY PIN1 (key reference 01) as the ME sends it to the card; the status word."""
        apdu = bytes([0x00, 0x20, 0x00, 0x01]) + (bytes([len(data)]) + data if data else b"\x00")
        return int.from_bytes(self._card(apdu)[-2:], "big")

    def _unblock_sw(self, data: bytes = b"") -> int:
        apdu = bytes([0x00, 0x2C, 0x00, 0x01]) + (bytes([len(data)]) + data if data else b"\x00")
        return int.from_bytes(self._card(apdu)[-2:], "big")

    @staticmethod
    def _block(text: str) -> bytes:
        if not (text.isdigit() and 4 <= len(text) <= 8):
            raise _Fail(CME_INCORRECT_PARAMETERS)
        return text.encode("ascii") + b"\xff" * (8 - len(text))

    def _cpin_code(self) -> str:
        sw = self._verify_sw()
        if sw == 0x9000:
            return "READY"
        if sw >> 4 == 0x63C and sw & 0x0F:
            return "SIM PIN"
        return "SIM PUK"

    def _cpin(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return []
        if form == "?":
            return [self._p("+CPIN", self._cpin_code())]
        params = _params(args or "")
        code = self._cpin_code()
        if code == "READY":
            raise _Fail(CME_NOT_ALLOWED)  # no PIN request pending (TS 27.007 8.3)
        if code == "SIM PIN":
            if len(params) != 1:
                raise _Fail(CME_INCORRECT_PARAMETERS)
            if self._verify_sw(self._block(params[0])) != 0x9000:
                raise _Fail(CME_INCORRECT_PASSWORD)
            return []
        if len(params) != 2:
            raise _Fail(CME_SIM_PUK_REQUIRED)
        if self._unblock_sw(self._block(params[0]) + self._block(params[1])) != 0x9000:
            raise _Fail(CME_INCORRECT_PASSWORD)
        return []

    def _pin_retries(self, template: str) -> list[str]:
        """The profile's vendor answer with the card's PIN1 and PUK tries left."""
        sw = self._verify_sw()
        pin = sw & 0x0F if sw >> 4 == 0x63C else (0 if sw == 0x6983 else 3)
        usw = self._unblock_sw()
        puk = usw & 0x0F if usw >> 4 == 0x63C else 10
        body = template.format(pin=pin, puk=puk)
        if not self.dialect.colon_space:
            body = body.replace(": ", ":", 1)
        return [body]

    # --- IMS reporting ----------------------------------------------------------------------------

    def _cirep(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return [self._p("+CIREP", "(0,1)")]
        if form == "?":
            return [self._p("+CIREP", f"{self.cirep},1")]
        if args not in ("", "0", "1"):
            raise _Fail(CME_INCORRECT_PARAMETERS)
        self.cirep = int(args or 0)
        return []

    def _cireg(self, form: str, args: str | None) -> list[str]:
        if form == "=?":
            return [self._p("+CIREG", "(0-2)")]
        if form == "?":
            return [self._p("+CIREG", f"{self.cireg},1" + (",1" if self.cireg == 2 else ""))]
        if args not in ("", "0", "1", "2"):
            raise _Fail(CME_INCORRECT_PARAMETERS)
        self.cireg = int(args or 0)
        return []


def main(args: argparse.Namespace) -> int:
    """``ue-agent lab modem --subscriber F --pty PATH [--profile NAME] [--control FIFO]``.

    Runs until SIGTERM/SIGINT. The FIFO (``--control``, or ``$UE_AGENT_MODEM_CONTROL``) takes
    one URC line per line, or ``!fail KIND [n]``, ``!srvcc N``, ``!vanish``, ``!reset [silent]``,
    ``!shape KIND [key=value ...]`` (e.g. ``!shape late match=AT+CSIM delay=1.5``).
    """
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    control = getattr(args, "control", None) or os.environ.get("UE_AGENT_MODEM_CONTROL")
    sim = ModemSimulator(SoftUicc(load_subscriber(args.subscriber)), args.profile, args.pty)
    if control:
        sim.set_control(control)
    done = threading.Event()

    def _term(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    sim.start()
    print(
        f"modem simulator ({sim.profile.name}) on {args.pty} -> {sim.slave_path}"
        + (f", control FIFO {control}" if control else ""),
        flush=True,
    )
    try:
        while not done.wait(0.5):
            pass
    finally:
        sim.close()
        if control:
            try:
                os.unlink(control)
            except OSError:
                pass
    print("modem simulator stopped", file=sys.stderr, flush=True)
    return 0
