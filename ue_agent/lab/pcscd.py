"""pcscd with two vpcd virtual readers, run without systemd: for the lab, the demo and the tests.

Only one pcscd can run on a machine (its socket, /run/pcscd/pcscd.comm, is fixed). Its
reader config lives in a fixed directory with a marker line: a pcscd left running with
that config is reused (its vpcd port read back from the config); any other pcscd is
stopped first (:meth:`Pcscd.adopt_or_clear`). Stale /run/pcscd files whose pid is dead are
removed. pcscd names the two vpcd slots of one config line "<FRIENDLYNAME> 00 00" and
"... 00 01", on TCP ports PORT and PORT+1.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

RUN_DIR = Path("/run/pcscd")
COMM = RUN_DIR / "pcscd.comm"
PIDFILE = RUN_DIR / "pcscd.pid"
VPCD_DRIVER_DIRS = (
    "/usr/lib/pcsc/drivers/serial",
    "/usr/lib64/pcsc/drivers/serial",
    "/usr/local/lib/pcsc/drivers/serial",
)
CONFIG_DIR = Path(tempfile.gettempdir()) / "ue-agent-lab-pcscd"
MARKER = "# ue-agent lab pcscd"
FRIENDLY = "Virtual PCD"
#: pcscd names the two vpcd slots of one config line "<FRIENDLYNAME> 00 00" and "... 00 01"
READERS = (f"{FRIENDLY} 00 00", f"{FRIENDLY} 00 01")


def private_dir(path: Path = CONFIG_DIR) -> Path:
    """``path`` as a directory only this uid can use: made 0700 when missing; an existing one
    must be a real directory owned by us (a group/other mode is narrowed to 0700).

    The path is fixed (one pcscd and one lock per machine, shared by every checkout), and it
    sits in /tmp: another uid could create it first, or put a symlink there, and then make
    us write our files where it wants or load a reader driver it planted. Refused then.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
        raise PermissionError(f"{path} is not a directory of ours ({exc.strerror}); remove it") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise PermissionError(
                f"{path} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): "
                "someone else created it; remove it and try again"
            )
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def vpcd_driver() -> str | None:
    for d in VPCD_DRIVER_DIRS:
        lib = Path(d) / "libifdvpcd.so"
        if lib.exists():
            return str(lib)
    return None


def _read_pid() -> int | None:
    try:
        text = PIDFILE.read_bytes().replace(b"\x00", b"").strip()  # pcscd writes a trailing NUL
        return int(text)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own child not yet reaped) is dead for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\x00")
    except OSError:
        return []


def _comm_answers() -> bool:
    """True when something accepts connections on pcscd's socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(COMM))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _two_free_ports() -> int:
    """A TCP port P on loopback with P+1 free too (vpcd listens on both)."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two consecutive free TCP ports")


def _config_text(port: int, driver: str, friendly: str = FRIENDLY) -> str:
    return (
        f"{MARKER}\n"
        f'FRIENDLYNAME "{friendly}"\n'
        f"DEVICENAME /dev/null:0x{port:X}\n"
        f"LIBPATH {driver}\n"
        f"CHANNELID 0x{port:X}\n"
    )


def _port_of(config: Path) -> int | None:
    try:
        text = config.read_text()
    except OSError:
        return None
    m = re.search(r"^CHANNELID\s+0x([0-9A-Fa-f]+)", text, re.M)
    return int(m.group(1), 16) if MARKER in text and m else None


def _list_readers(timeout: float, wanted: tuple[str, ...] = READERS) -> list[str]:
    """Readers pcscd lists, waiting up to ``timeout`` for all of ``wanted``."""
    from smartcard import scard

    deadline = time.monotonic() + timeout
    readers: list[str] = []
    while time.monotonic() < deadline:
        hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if hr == 0:
            try:
                hr, readers = scard.SCardListReaders(ctx, [])
                if hr == 0 and all(r in readers for r in wanted):
                    return list(readers)
            finally:
                scard.SCardReleaseContext(ctx)
        time.sleep(0.05)
    return list(readers)


def reader_present(reader: str) -> bool | None:
    """Whether pcscd shows a card in ``reader`` (None: pcscd or the reader unreachable)."""
    from smartcard import scard

    hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hr != 0:
        return None
    try:
        hr, states = scard.SCardGetStatusChange(ctx, 0, [(reader, scard.SCARD_STATE_UNAWARE)])
        if hr != 0:
            return None
        return bool(states[0][1] & scard.SCARD_STATE_PRESENT)
    finally:
        scard.SCardReleaseContext(ctx)


def wait_reader(reader: str, present: bool, timeout: float = 10.0) -> None:
    """Wait until pcscd sees the card in ``reader`` come (``present``) or go."""
    deadline = time.monotonic() + timeout
    while reader_present(reader) is not present:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"pcscd did not see the card in {reader!r} {'arrive' if present else 'leave'}"
            )
        time.sleep(0.02)


class Pcscd:
    """The one pcscd of this machine, serving vpcd readers on ``port`` and ``port + 1``."""

    def __init__(self, driver: str) -> None:
        self.driver = driver
        # pcscd parses every file in its config directory: keep the log out of it
        self.config_dir = CONFIG_DIR / "reader.conf.d"
        self.config = self.config_dir / "vpcd"
        self.log_path = CONFIG_DIR / "pcscd.log"
        self.port = 0
        self.readers = READERS
        self.proc: subprocess.Popen | None = None
        self.reused_pid: int | None = None

    # -- finding what is there --------------------------------------------------------

    def _ours(self, pid: int) -> bool:
        args = _cmdline(pid)
        for flag in ("--config", "-c"):
            if flag in args and args.index(flag) + 1 < len(args):
                path = Path(args[args.index(flag) + 1])
                config = path / "vpcd" if path.is_dir() else path
                return config.resolve() == self.config.resolve() and _port_of(config) is not None
        return False

    def _clear_stale(self) -> None:
        pid = _read_pid()
        if pid is not None and _alive(pid):
            return
        if COMM.exists() and pid is None and _comm_answers():
            return  # a pcscd without a pid file: leave it to adopt()
        for f in (COMM, PIDFILE):
            try:
                f.unlink()
            except FileNotFoundError:
                pass

    def _stop_pid(self, pid: int) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.pid == pid:
                    if self.proc.poll() is not None:
                        return
                elif not _alive(pid):
                    return
                time.sleep(0.02)

    def adopt_or_clear(self) -> bool:
        """Reuse a pcscd running with our config (True), else stop it and clear its files."""
        self._clear_stale()
        pid = _read_pid()
        if pid is not None and _alive(pid):
            if self._ours(pid) and _comm_answers():
                self.port = _port_of(self.config) or 0
                self.reused_pid = pid
                if self.port and all(r in _list_readers(5.0) for r in READERS):
                    return True
            self._stop_pid(pid)
            self.reused_pid = None
        self._clear_stale()
        return False

    # -- control ----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.reused_pid is not None and _alive(self.reused_pid)

    @property
    def pid(self) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            return self.proc.pid
        return self.reused_pid if self.running else None

    def start(self, friendly: str = FRIENDLY) -> None:
        """Start pcscd (no-op when it runs) and wait until it lists both readers.

        ``friendly`` renames the readers (a test's way to make "our" reader disappear); a
        pcscd running with other names is restarted.
        """
        wanted = (f"{friendly} 00 00", f"{friendly} 00 01")
        if self.running:
            if self.readers == wanted:
                return
            self.stop()
        self.readers = wanted
        self._clear_stale()
        if not self.port:
            self.port = _two_free_ports()
        private_dir()
        self.config_dir.mkdir(mode=0o700, exist_ok=True)
        if self.log_path.exists() and self.log_path.stat().st_size > 1 << 20:
            self.log_path.unlink()  # keep one session's worth
        self.config.write_text(_config_text(self.port, self.driver, friendly))
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                ["pcscd", "--foreground", "--config", str(self.config_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        self.reused_pid = None
        readers = _list_readers(15.0, self.readers)
        if not all(r in readers for r in self.readers):
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"pcscd did not list {self.readers} (got {readers}); log:\n{tail}")

    def stop(self) -> None:
        """Stop pcscd (SIGTERM, then SIGKILL) and remove its run files."""
        pid = self.pid
        if pid is not None:
            self._stop_pid(pid)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.proc = None
        self.reused_pid = None
        self._clear_stale()

    def kill(self) -> None:
        """SIGKILL, leaving the stale run files behind (as a crash would)."""
        pid = self.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            if self.proc is not None:
                self.proc.wait(5)
        self.proc = None
        self.reused_pid = None

    def restart(self) -> None:
        self.stop()
        self.start()


def unavailable_reason() -> str | None:
    """Why pcscd with vpcd readers cannot run here, or None."""
    if shutil.which("pcscd") is None:
        return "pcscd is not installed (apt-get install pcscd vsmartcard-vpcd libpcsclite-dev)"
    if vpcd_driver() is None:
        return "the vpcd reader driver libifdvpcd.so is not installed (apt-get install vsmartcard-vpcd)"
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return "pyscard is not installed (it builds against libpcsclite-dev)"
    if os.geteuid() != 0 and not os.access(RUN_DIR if RUN_DIR.exists() else RUN_DIR.parent, os.W_OK):
        return f"cannot run pcscd here: {RUN_DIR} is not writable (run as root)"
    return None


@contextlib.contextmanager
def machine_lock(timeout: float = 600.0) -> Iterator[None]:
    """One user of pcscd's vpcd readers per machine at a time (a test session, the demo).

    A flock: released by the kernel if the holder dies, so a crash never blocks the next one.
    Raises TimeoutError when another holder keeps it longer than ``timeout``.
    """
    private_dir()
    with open(CONFIG_DIR / "session.lock", "w") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has held pcscd's readers for {timeout:g} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class PcscdUnavailable(RuntimeError):
    """pcscd, the vpcd driver or pyscard is missing, or /run/pcscd is not writable."""


def ensure() -> Pcscd:
    """A running pcscd with our vpcd readers (adopted or started); raises PcscdUnavailable."""
    reason = unavailable_reason()
    if reason:
        raise PcscdUnavailable(reason)
    daemon = Pcscd(vpcd_driver() or "")
    if not daemon.adopt_or_clear():
        daemon.start()
    return daemon


def release(daemon: Pcscd) -> None:
    """Stop pcscd if we started it; one we only adopted keeps running."""
    if daemon.proc is not None:
        daemon.stop()
