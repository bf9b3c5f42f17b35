"""The daemon's start-up time and idle memory on the lab card, against a bare Python floor.

    python benchmarks/bench_footprint.py [--runs N]

Start-up is measured from spawn to READY=1 on NOTIFY_SOCKET, as systemd sees it. The floor
is a Python process that does nothing but send READY=1.
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    floor = [floor_once() for _ in range(args.runs)]
    runs = []
    for _ in range(args.runs):
        with Daemon() as d:
            time.sleep(1.0)  # idle
            runs.append((d.ready_s, rss_kib(d.proc.pid)))
    rows = [("floor (bare python)", floor), ("ue-agent run (lab card)", runs)]
    print(f"{'':24}{'start-up to READY=1 (median)':>30}{'idle RSS (median)':>22}")
    for name, samples in rows:
        took = statistics.median(t for t, _ in samples) * 1000
        rss = statistics.median(r for _, r in samples) / 1024
        print(f"{name:24}{took:27.1f} ms{rss:19.1f} MB")
    print(f"runs={args.runs}; idle RSS budget 40 MB")


if __name__ == "__main__":
    main()
