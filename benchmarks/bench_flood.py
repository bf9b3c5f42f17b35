"""A well-behaved client's status latency and the daemon's RSS while non-reading clients flood.

    python -m benchmarks.bench_flood [--flooders 16] [--seconds 20] [--write-timeout 10]

The attack of issue 13: FLOODERS connections write "1\\n" (a tiny invalid request, each
answered with a ~100-byte error) as fast as the socket takes it and never read; a
connection the agent closes is reopened at once (tests/attack/peers.py flood). Meanwhile
one client sends ``status`` every 20 ms on its own connection and times each answer, and
the daemon's VmRSS is sampled. Printed: the good client's p50/p90/p99/max, the daemon's
RSS at start and its peak, the bytes the flooders got in and how often they reconnected.
The deployed unit has MemoryMax=64M; issue 13 asks for RSS < 64 MB and p99 < 200 ms.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks._util import REPO, Daemon, pct, rss_kib


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flooders", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--write-timeout", type=float, default=None, help="[api] write_timeout_s (default 10)")
    args = ap.parse_args()

    from ue_agent.api.client import Client

    d = Daemon()
    d.config.write_text(
        d.config.read_text().replace(
            "[api]\n",
            f"[api]\nmax_clients = {args.flooders + 1}\n"
            + (f"write_timeout_s = {args.write_timeout}\n" if args.write_timeout is not None else ""),
        )
    )
    with d:
        assert d.proc is not None
        pid = d.proc.pid
        base = rss_kib(pid)
        with Client(d.socket, timeout=10) as c:  # connected before the flood: a place of its own
            c.call("status")
            flood = subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "tests" / "attack" / "peers.py"),
                    "flood",
                    d.socket,
                    str(args.flooders),
                    str(args.seconds),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(0.5)
            lat: list[float] = []
            peak = base
            end = time.monotonic() + args.seconds - 1.0
            while time.monotonic() < end:
                t0 = time.perf_counter()
                c.call("status")
                lat.append(time.perf_counter() - t0)
                peak = max(peak, rss_kib(pid))
                time.sleep(0.02)
            out, _ = flood.communicate(timeout=args.seconds + 30)
        counts = json.loads(out.splitlines()[-1])
    ms = [x * 1e3 for x in lat]
    wt = args.write_timeout or 10
    print(
        f"{args.flooders} non-reading flooders, {args.seconds:g} s, write_timeout_s={wt:g}:\n"
        f"  good client status: n={len(ms)} p50={pct(ms, 50):.2f} ms p90={pct(ms, 90):.2f} ms "
        f"p99={pct(ms, 99):.2f} ms max={max(ms):.2f} ms\n"
        f"  daemon RSS: start {base / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB\n"
        f"  flooders: {counts['bytes'] / 2**20:.1f} MiB written, {counts['reopened']} reconnects"
    )


if __name__ == "__main__":
    main()
