"""The daemon's life cycle, run as a real subprocess: start-up, sd_notify, the socket file,
socket activation, SIGHUP reload, SIGTERM zeroization, and ``ue-agent status``."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

from tests.fixtures.daemon import REPO, aka_challenge, config_text, lab_config, short_dir, spawn


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ue_agent", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_ready_status_and_socket_mode(lab_daemon) -> None:
    ready = lab_daemon.wait_notify("READY=1")
    assert f"MAINPID={lab_daemon.proc.pid}" in ready.split("\n")
    assert any(line.startswith("STATUS=card present") for line in ready.split("\n"))
    st = os.stat(lab_daemon.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    with lab_daemon.client() as c:
        hello = c.request("hello", protocols=[1], client="test")
        assert hello["protocol"] == 1 and "ims.authenticate" in hello["ops"]
        status = c.request("status")
    assert status["card"]["present"] is True and status["card"]["application"] == "isim"
    assert status["card"]["impi"].startswith("001010000000001@")
    assert status["api"]["clients"] == 1


def test_status_command(lab_daemon) -> None:
    out = run_cli("status", "--socket", lab_daemon.socket)
    assert out.returncode == 0, out.stderr
    assert "card:       lab, present, application isim" in out.stdout
    assert "sip:alice@ims.mnc001.mcc001.3gppnetwork.org" in out.stdout
    js = run_cli("status", "--socket", lab_daemon.socket, "--json")
    data = json.loads(js.stdout)
    assert data["card"]["transport"] == "lab" and data["handover"]["phase"] == "ps"
    gone = run_cli("status", "--socket", lab_daemon.dir.as_posix() + "/nothing.sock")
    assert gone.returncode == 1 and "api.unreachable" in gone.stderr


def test_bad_config_fails_at_start_naming_the_key() -> None:
    d = short_dir()
    cfg = lab_config(d)
    cfg["api"]["max_clients"] = "many"
    (d / "config.toml").write_text(config_text(cfg))
    out = run_cli("run", "--config", str(d / "config.toml"))
    assert out.returncode == 1
    assert "config.invalid" in out.stderr and "'api.max_clients'" in out.stderr
    assert not (d / "api.sock").exists()
    (d / "config.toml").write_text(config_text(cfg).replace('max_clients = "many"', "max_client = 3"))
    out = run_cli("run", "--config", str(d / "config.toml"))
    assert out.returncode == 1 and "config.unknown_key" in out.stderr and "'api.max_client'" in out.stderr


def test_stale_socket_is_replaced_live_one_is_not(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(d / "api.sock"))
    stale.close()  # the file stays, nobody listens
    first = spawn(d, lab_config(d))
    daemon_factory.started.append(first)
    with first.client() as c:
        assert c.request("status")["card"]["present"]
    # a second daemon on the same path must not steal it
    d2 = short_dir()
    daemon_factory.dirs.append(d2)
    cfg = lab_config(d2)
    cfg["api"]["socket"] = first.socket
    second = spawn(d2, cfg, wait_ready=False)
    assert second.proc.wait(30) == 1
    assert "api.socket_in_use" in second.log_text()
    second.notify.close()
    with first.client() as c:
        assert c.request("status")["card"]["present"]
    # a path that is not a socket is never removed
    d3 = short_dir()
    daemon_factory.dirs.append(d3)
    (d3 / "api.sock").write_text("precious")
    third = spawn(d3, lab_config(d3), wait_ready=False)
    assert third.proc.wait(30) == 1 and (d3 / "api.sock").read_text() == "precious"
    third.notify.close()


def test_sighup_reload_and_invalid_reload(lab_daemon) -> None:
    with lab_daemon.client() as c:
        assert c.request("hello")["max_inflight"] == 4
    text = lab_daemon.config.read_text()
    lab_daemon.config.write_text(text.replace("[api]\n", "[api]\nmax_inflight = 1\n"))
    lab_daemon.proc.send_signal(signal.SIGHUP)
    lab_daemon.messages.clear()
    lab_daemon.wait_notify("RELOADING=1")
    assert "STATUS=reloaded" in lab_daemon.wait_notify("READY=1")
    with lab_daemon.client() as c:
        assert c.request("hello")["max_inflight"] == 1
    lab_daemon.config.write_text(text.replace("[api]\n", "[api]\nmax_inflight = 1\nbogus = 2\n"))
    lab_daemon.messages.clear()
    lab_daemon.proc.send_signal(signal.SIGHUP)
    msg = lab_daemon.wait_notify("READY=1")
    assert "STATUS=reload refused: config.unknown_key; running config kept" in msg
    assert "api.bogus" in lab_daemon.log_text()
    with lab_daemon.client() as c:
        assert c.request("hello")["max_inflight"] == 1
        assert c.request("status")["card"]["present"]


def test_sigterm_zeroizes_and_removes_socket(lab_daemon) -> None:
    rand, autn = aka_challenge(40)
    with lab_daemon.client() as c:
        r = c.request(
            "ims.authenticate", rand=base64.b64encode(rand).decode(), autn=base64.b64encode(autn).decode()
        )
        assert r["result"] == "success"
    assert lab_daemon.stop(signal.SIGTERM) == 0
    log = lab_daemon.log_text()
    assert "STOPPING=1" in "\n".join(lab_daemon.messages) or "stopping" in log
    assert ", 0 left" in log and "keys zeroized" in log
    assert not os.path.exists(lab_daemon.socket)


def test_socket_activation(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    path = str(d / "activated.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    cfg = lab_config(d)  # [api] socket names another path: the passed fd wins
    # what systemd does: the listening socket at fd 3, LISTEN_PID = the service's own pid
    shim = (
        "import os, sys; os.dup2(int(os.environ.pop('ACT_FD')), 3); "
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); os.execv(sys.argv[1], sys.argv[1:])"
    )
    wrapper = (sys.executable, "-c", shim)
    daemon = spawn(
        d,
        cfg,
        env={"ACT_FD": str(listener.fileno())},
        pass_fds=(listener.fileno(),),
        argv_prefix=wrapper,
    )
    daemon_factory.started.append(daemon)
    listener.close()
    assert not os.path.exists(cfg["api"]["socket"])
    assert "socket activation" in daemon.log_text()
    from ue_agent.api.client import Client

    with Client(path, timeout=20) as c:
        assert c.request("status")["card"]["present"]
    assert daemon.stop() == 0
    assert os.path.exists(path)  # systemd owns the activated socket file; the agent leaves it


def test_watchdog_and_abstract_notify_socket(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    name = f"uea-notify-{os.getpid()}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + name)
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "100000"}
    daemon = spawn(d, lab_config(d), env=env, wait_ready=False)
    daemon_factory.started.append(daemon)
    daemon.notify.close()
    daemon.notify = notify
    daemon.wait_notify("READY=1")
    daemon.wait_notify("WATCHDOG=1")
    daemon.messages.clear()
    daemon.wait_notify("WATCHDOG=1")  # keeps coming


def test_watchdog_for_another_pid_is_ignored(daemon_factory) -> None:
    d = short_dir()
    daemon_factory.dirs.append(d)
    env = {"WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"}
    daemon = spawn(d, lab_config(d), env=env)
    daemon_factory.started.append(daemon)
    with daemon.client() as c:
        assert c.request("status")["card"]["present"]
    daemon.notify.setblocking(False)
    queued = []
    while True:
        try:
            queued.append(daemon.notify.recv(4096).decode())
        except BlockingIOError:
            break
    assert not any("WATCHDOG=1" in m for m in daemon.messages + queued)


def test_idle_memory_is_small(lab_daemon) -> None:
    """Small boards: an idle agent on the lab card stays under 40 MB resident, and the
    network stack (aiohttp's C parts) is not loaded before an operation needs it."""
    with lab_daemon.client() as c:
        c.request("status")
    status = Path(f"/proc/{lab_daemon.proc.pid}/status").read_text()
    rss_kb = int(status.split("VmRSS:")[1].split()[0])
    assert rss_kb < 40 * 1024, f"idle RSS {rss_kb} kB"
    maps = Path(f"/proc/{lab_daemon.proc.pid}/maps").read_text()
    assert "aiohttp" not in maps and "yarl" not in maps
