"""Shared pieces of the benchmarks: percentiles, RSS, a daemon on the lab card, a raw floor."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ue_agent

if TYPE_CHECKING:
    from ue_agent.lab.network import LabNetwork

REPO = Path(ue_agent.__file__).parent.parent
SUBSCRIBERS = Path(ue_agent.__file__).parent / "lab" / "subscribers"


def timed(fn: Callable[[], object], n: int) -> list[float]:
    """``n`` calls of ``fn``, each one's wall time in seconds."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def pct(samples: Sequence[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(
    name: str,
    samples_s: Sequence[float],
    floor_s: Sequence[float] | None = None,
    over_s: Sequence[float] | None = None,
) -> str:
    """One line: p50/p90/p99 in microseconds of one client's sequential calls, the ratio to
    ``floor_s``'s p50 and, with ``over_s``, the p50 difference to that second floor.

    No requests per second here: one client's 1/mean is not a throughput (python -m
    benchmarks measures completed requests per second with 1 and 16 clients)."""
    us = [x * 1e6 for x in samples_s]
    line = (
        f"{name:<34} n={len(us):<6} p50={pct(us, 50):8.1f}us p90={pct(us, 90):8.1f}us "
        f"p99={pct(us, 99):8.1f}us"
    )
    if floor_s:
        line += f"  x{statistics.median(samples_s) / statistics.median(floor_s):5.1f} floor"
    if over_s:
        line += f"  {(statistics.median(samples_s) - statistics.median(over_s)) * 1e6:+8.1f}us over floor"
    return line


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_s(pid: int) -> float:
    """CPU time so far of ``pid``'s threads alive now, in seconds (the scheduler's own count,
    /proc/PID/task/*/schedstat, in ns: user and kernel time, no tick granularity). A thread
    that ends between two readings takes its time with it: read around work whose threads
    outlive it (the daemon's loop and card worker do)."""
    total, seen = 0, False
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
            seen = True
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            pass
    if seen:
        return total / 1e9
    # a kernel without schedstat: utime + stime of the process, in clock ticks
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def network_config(net: LabNetwork) -> str:
    """The [network] section that points a daemon at the lab network ``net``."""
    return (
        f'\n[network]\nbsf_url = "{net.bsf_url}"\nkms_url = "{net.kms_url}"\n'
        f'bsf_fqdn = "{net.bsf.fqdn}"\nkms_fqdn = "{net.naf_auth.naf_fqdn}"\n'
    )


class Daemon:
    """``ue-agent run`` on a lab config, started as systemd would (NOTIFY_SOCKET, READY=1)."""

    def __init__(
        self,
        extra: str = "",
        subscriber: str = "alice.toml",
        env: dict[str, str | None] | None = None,
        module: str = "ue_agent",
    ) -> None:
        #: environment changes for the daemon process; a None value removes the variable
        self.env_changes = dict(env or {})
        #: what ``python -m`` runs: the agent, or a benchmark's wrapper of it
        self.module = module
        self.dir = Path(tempfile.mkdtemp(prefix="uea-bench-", dir="/tmp"))
        self.socket = str(self.dir / "api.sock")
        sub = self.dir / subscriber
        shutil.copy(SUBSCRIBERS / subscriber, sub)
        self.subscriber = sub
        self.config = self.dir / "config.toml"
        self.config.write_text(
            f'[card]\ntransport = "lab"\nsubscriber = "{sub}"\n\n[api]\nsocket = "{self.socket}"\n'
            f'\n[log]\nlevel = "warning"\n{extra}'
        )
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.dir / "notify.sock"))
        self.proc: subprocess.Popen | None = None
        self.ready_s = 0.0

    def start(self) -> Daemon:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.dir / "notify.sock")}
        for key, value in self.env_changes.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "run", "--config", str(self.config)],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.notify.settimeout(30)
        while b"READY=1" not in self.notify.recv(4096):
            pass
        self.ready_s = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


FLOOR_SERVER = r"""
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(path); s.listen(8)
print("ready", flush=True)
c, _ = s.accept(); f = c.makefile("rb")
for line in f:
    c.sendall(line)
"""

#: asyncio streams + one json.loads/json.dumps per line: what the agent's server does before
#: any validation or work, so (agent - this floor) is what the agent itself adds.
ASYNC_FLOOR_SERVER = r"""
import asyncio, json, sys

async def serve(reader, writer):
    while line := await reader.readline():
        msg = json.loads(line)
        writer.write(json.dumps({"id": msg.get("id"), "ok": True}, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_unix_server(serve, sys.argv[1], limit=65536)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


class EchoFloor:
    """A line server in another Python process: the floor for one round trip.

    ``script`` is :data:`FLOOR_SERVER` (raw socket echo) or :data:`ASYNC_FLOOR_SERVER`
    (asyncio streams, JSON decoded and a reply encoded per line).
    """

    def __init__(self, script: str = FLOOR_SERVER) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="uea-floor-", dir="/tmp"))
        self.path = str(self.dir / "echo.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, self.path], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "ready"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)
        self.file = self.sock.makefile("rb")

    def roundtrip(self, line: bytes) -> bytes:
        self.sock.sendall(line)
        return self.file.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
