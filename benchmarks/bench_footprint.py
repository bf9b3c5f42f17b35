"""The daemon's start-up time and idle memory on the lab card, against a bare Python floor.

    python benchmarks/bench_footprint.py [--runs N]

Start-up is measured from spawn to READY=1 on NOTIFY_SOCKET, as systemd sees it. The floor
is a Python process that does nothing but send READY=1.

The daemon is measured twice: as this environment runs it (when PYTHONDONTWRITEBYTECODE is
set, as in the dev container, every start compiles the agent's modules from source), and
with a warm bytecode cache (PYTHONPYCACHEPREFIX in a temporary directory), which is what an
installed package (.pyc written at install time) does on a board.

``--importtime`` also prints the daemon's slowest imports up to READY=1 (``-X importtime``,
cumulative), to see what start-up pays for.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import Daemon, rss_kib

FLOOR = (
    "import os, socket, time\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "s.sendto(b'READY=1', os.environ['NOTIFY_SOCKET'])\n"
    "time.sleep(60)\n"
)


def floor_once() -> tuple[float, int]:
    d = Path(tempfile.mkdtemp(prefix="uea-floor-", dir="/tmp"))
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(str(d / "n.sock"))
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-c", FLOOR], env={**os.environ, "NOTIFY_SOCKET": str(d / "n.sock")}
    )
    n.recv(64)
    took = time.perf_counter() - t0
    time.sleep(0.5)
    rss = rss_kib(p.pid)
    p.kill()
    p.wait()
    n.close()
    return took, rss


#: a KMS URL: the warm-up after READY=1 loads the HTTP/GBA/KMS code the first call needs, so
#: the idle RSS is measured with it loaded (nothing connects while idle)
KMS_CONFIG = '\n[network]\nbsf_url = "http://127.0.0.1:9/"\nkms_url = "http://127.0.0.1:9/"\n'


def daemon_once(env: dict[str, str | None] | None = None) -> tuple[float, int]:
    with Daemon(KMS_CONFIG, env=env) as d:
        time.sleep(2.0)  # idle, after the background warm-up
        return d.ready_s, rss_kib(d.proc.pid)


def importtime(top: int = 15) -> list[str]:
    """The daemon's ``top`` slowest imports (cumulative) up to READY=1."""
    with Daemon(env={"PYTHONPROFILEIMPORTTIME": "1"}) as d:
        assert d.proc is not None
        d.proc.terminate()
        _, err = d.proc.communicate(timeout=10)
    rows = []
    for line in err.decode(errors="replace").splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|")
            if cumulative.strip().isdigit():
                rows.append((int(cumulative), name.rstrip()))
    rows.sort(reverse=True)
    return [f"{us / 1000:8.1f} ms {name}" for us, name in rows[:top]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--importtime", action="store_true", help="also list the slowest imports")
    args = ap.parse_args()
    floor = [floor_once() for _ in range(args.runs)]
    runs = [daemon_once() for _ in range(args.runs)]
    cache = tempfile.mkdtemp(prefix="uea-pyc-", dir="/tmp")
    cached_env: dict[str, str | None] = {"PYTHONDONTWRITEBYTECODE": None, "PYTHONPYCACHEPREFIX": cache}
    try:
        daemon_once(cached_env)  # fills the cache
        cached = [daemon_once(cached_env) for _ in range(args.runs)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    source = "no .pyc" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "as installed"
    rows = [
        ("floor (bare python)", floor),
        (f"ue-agent run ({source})", runs),
        ("ue-agent run (.pyc cached)", cached),
    ]
    print(f"{'':28}{'start-up to READY=1 (median)':>30}{'idle RSS (median)':>22}")
    for name, samples in rows:
        took = statistics.median(t for t, _ in samples) * 1000
        rss = statistics.median(r for _, r in samples) / 1024
        print(f"{name:28}{took:27.1f} ms{rss:19.1f} MB")
    print(f"runs={args.runs}; lab card, a KMS URL configured; idle RSS after warm-up; budget 40 MB")
    if args.importtime:
        print("slowest imports up to READY=1 (cumulative, -X importtime):")
        print("\n".join(importtime()))


if __name__ == "__main__":
    main()
