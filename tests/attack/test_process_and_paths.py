"""Attacks on the agent's process and paths (issue 13): a socket directory another uid
controls, a process whose memory its own uid could read, a frozen sd_notify receiver, a
second opener of the modem's tty, a lab pcscd directory planted in /tmp.

Every test here is bounded: one daemon at most, waits of at most 30 s, no loops without a cap.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.daemon import lab_config, short_dir, spawn
from ue_agent.api.server import check_socket_dir
from ue_agent.errors import AgentError

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a path to another uid")
#: a root process without any capability: the same uid as the agent, none of root's powers
NO_CAPS = ("setpriv", "--inh-caps=-all", "--bounding-set=-all")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) missing")


@root_only
def test_socket_directory_owned_by_another_uid_refuses_start(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    sock_dir = d / "run"
    sock_dir.mkdir(mode=0o755)
    os.chown(sock_dir, NOBODY, NOBODY)  # that uid could rename our socket and listen in its place
    cfg = lab_config(d)
    cfg["api"]["socket"] = str(sock_dir / "api.sock")
    daemon = spawn(d, cfg, wait_ready=False)
    try:
        assert daemon.proc.wait(30) == 1
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert "api.socket_dir" in log and f"owned by uid {NOBODY}" in log, log
    assert not (sock_dir / "api.sock").exists()


def test_socket_directory_rules(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir(mode=0o755)
    base.chmod(0o755)

    def refused(path: Path, why: str) -> None:
        with pytest.raises(AgentError) as e:
            check_socket_dir(str(path / "api.sock"))
        assert e.value.code == "api.socket_dir" and why in e.value.message, e.value.message

    # missing: created 0755, owned by us, accepted
    check_socket_dir(str(base / "new" / "api.sock"))
    st = os.lstat(base / "new")
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == os.geteuid()
    # writable by group or others
    for mode, who in ((0o775, "its group"), (0o757, "others"), (0o1777, "others")):
        d = base / f"m{mode:o}"
        d.mkdir()
        d.chmod(mode)
        refused(d, f"writable by {who}")
    # a symlink to a good directory: refused (the link's owner could re-point it)
    (base / "link").symlink_to(base / "new")
    refused(base / "link", "is a symlink")
    # a directory above that others may write (not sticky): refused
    open_parent = base / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)
    inner = open_parent / "inner"
    inner.mkdir(mode=0o755)
    inner.chmod(0o755)
    refused(inner, "directory above the socket")
    # a sticky world-writable directory above (like /tmp) is fine; /tmp itself is not
    sticky = base / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    check_socket_dir(str(sticky / "ok" / "api.sock"))
    with pytest.raises(AgentError):
        check_socket_dir("/tmp/api.sock")
    # a missing parent of the directory: a clear error, nothing created on the way
    with pytest.raises(AgentError) as e:
        check_socket_dir(str(base / "no" / "such" / "api.sock"))
    assert e.value.code == "api.socket_dir" and not (base / "no").exists()


@root_only
def test_socket_directory_of_other_owner_is_refused_in_process(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(AgentError) as e:
        check_socket_dir(str(d / "api.sock"))
    assert f"owned by uid {NOBODY}" in e.value.message


def _readable_by_capless_same_uid(pid: int) -> tuple[int, str]:
    out = subprocess.run([*NO_CAPS, "cat", f"/proc/{pid}/environ"], capture_output=True, timeout=10)
    return out.returncode, out.stderr.decode(errors="replace")


@root_only
@needs_setpriv
def test_daemon_is_not_dumpable(daemon_factory) -> None:
    """Its own uid (without CAP_SYS_PTRACE) cannot read its /proc/PID/environ (or mem); a
    dumpable process of the same uid and capabilities can be read, so the check means it."""
    control = subprocess.Popen([*NO_CAPS, "sleep", "30"])
    try:
        time.sleep(0.2)  # let setpriv exec sleep
        rc, err = _readable_by_capless_same_uid(control.pid)
        assert rc == 0, err
    finally:
        control.kill()
        control.wait()
    d = short_dir()
    daemon_factory.dirs.append(d)
    daemon = spawn(d, lab_config(d), argv_prefix=NO_CAPS)  # the agent too runs without capabilities
    daemon_factory.started.append(daemon)
    rc, err = _readable_by_capless_same_uid(daemon.proc.pid)
    assert rc != 0 and "Permission denied" in err
    log = daemon.log_text()
    assert "dumpable=False" in log
    # without CAP_IPC_LOCK and with a finite RLIMIT_MEMLOCK the agent does not lock (and says so)
    assert "memory lock: limit" in log or "memory lock: locked" in log
    with daemon.client() as c:
        assert c.request("status")["ok"]


@root_only
def test_daemon_locks_memory_when_allowed(lab_daemon) -> None:
    """Root holds CAP_IPC_LOCK: mlockall(MCL_ONFAULT) is done, VmLck shows it."""
    status = Path(f"/proc/{lab_daemon.proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["VmLck"].split()[0]) > 0
    assert "memory lock: locked" in lab_daemon.log_text()


def test_sd_notify_receiver_that_does_not_read_cannot_freeze_the_daemon(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    daemon = spawn(d, lab_config(d), wait_ready=False, env={"WATCHDOG_USEC": "20000"})
    daemon_factory.started.append(daemon)
    # fill the receiver's queue now (net.unix.max_dgram_qlen datagrams), and never read it
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    sent = 0
    try:
        for _ in range(100_000):
            filler.sendto(b"X=1", str(d / "notify.sock"))
            sent += 1
    except BlockingIOError:
        pass
    finally:
        filler.close()
    assert 0 < sent < 100_000
    from ue_agent.api.client import Client

    deadline = time.monotonic() + 30
    answered = 0
    while answered < 3 and time.monotonic() < deadline:
        assert daemon.alive, daemon.log_text()
        try:
            with Client(daemon.socket, timeout=5) as c:
                assert c.request("status")["ok"]
                answered += 1
        except (AgentError, OSError):
            time.sleep(0.1)
    assert answered == 3, daemon.log_text()
    assert "sd_notify READY=1 not sent" in daemon.log_text()


@needs_setpriv
def test_at_tty_is_exclusive_while_the_agent_holds_it(modem_factory) -> None:
    from ue_agent.drivers.at_modem import AtPort

    sim = modem_factory()
    tty = os.path.realpath(sim.link_path)
    probe = [*NO_CAPS, "sh", "-c", 'exec 3<>"$1"', "probe", tty]  # open(2) read-write, as a 2nd reader would
    assert subprocess.run(probe, capture_output=True, timeout=10).returncode == 0  # nothing held yet
    port = AtPort(str(sim.link_path), timeout=5)
    try:
        out = subprocess.run(probe, capture_output=True, timeout=10)
        assert out.returncode != 0 and b"busy" in out.stderr.lower(), out.stderr
    finally:
        port.close()
    assert subprocess.run(probe, capture_output=True, timeout=10).returncode == 0  # released on close


@root_only
def test_lab_pcscd_directory_planted_by_another_uid_is_refused(tmp_path: Path) -> None:
    from ue_agent.lab.pcscd import private_dir

    planted = tmp_path / "pcscd"
    planted.mkdir(mode=0o700)
    os.chown(planted, NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=f"uid {NOBODY}"):
        private_dir(planted)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(PermissionError, match="not a directory of ours"):
        private_dir(link)
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    assert stat.S_IMODE(os.lstat(private_dir(loose)).st_mode) == 0o700
    fresh = private_dir(tmp_path / "fresh")
    assert stat.S_IMODE(os.lstat(fresh).st_mode) == 0o700
