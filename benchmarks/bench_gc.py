"""The garbage collector's pauses in two daemons making calls, with the warm-up's
``gc.freeze()`` and without it.

    python -m benchmarks.bench_gc [--calls N]

Two ``ue-agent run`` daemons (UE-A alice, UE-B bob, lab cards) and the lab network on
loopback, started through benchmarks/_gc_pauses.py, which writes down every collection. After
the warm-up, N warm calls (offer, answer, complete, both keys, both closes); then the
collections that ran during them (count per generation, the longest pause), the calls'
latency, and the pause of a full collection each daemon is made to run after them (SIGUSR2:
the collector runs one of its own when what it tracks has grown by about a quarter, rarely
in a short run, and then walks everything tracked). The same daemons without the freeze are
the floor: what it saves is the difference, in the same run, the two kinds alternating.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path

from benchmarks._util import SUBSCRIBERS, Daemon, network_config, pct
from ue_agent.api.client import Client
from ue_agent.lab.network import LabNetwork, LabNetworkThread
from ue_agent.subscriber import load_subscriber

KINDS = {"with gc.freeze() (as built)": "0", "without it": "1"}


def calls(
    net: LabNetwork, subs: list, no_freeze: str, n: int, log: Path
) -> tuple[list[float], list[tuple[int, float]], list[float]]:
    """``n`` warm calls: their latencies, the (generation, pause) of each collection meanwhile,
    and the pause of the full collection each daemon is then made to run."""
    network = network_config(net)
    env: dict[str, str | None] = {"UEA_GC_LOG": str(log), "UEA_GC_NO_FREEZE": no_freeze}
    module = "benchmarks._gc_pauses"
    lat = []
    with (
        Daemon(network, "alice.toml", env=env, module=module) as da,
        Daemon(network, "bob.toml", env=env, module=module) as db,
    ):
        time.sleep(2.0)  # the warm-up has ended
        with Client(da.socket) as a, Client(db.socket) as b:
            o = a.request("mikey.offer", responder=subs[1].impu[0], media=["audio"])  # the first call
            b.request("mikey.answer", transfer_init=o["key_mgmt"])
            start = time.time()
            for _ in range(n):
                t0 = time.perf_counter()
                o = a.request("mikey.offer", responder=subs[1].impu[0], media=["audio"])
                ans = b.request("mikey.answer", transfer_init=o["key_mgmt"])
                a.request("mikey.complete", session=o["session"], transfer_resp=ans["key_mgmt"])
                a.request("session.keys", session=o["session"])
                b.request("session.keys", session=ans["session"])
                a.request("session.close", session=o["session"])
                b.request("session.close", session=ans["session"])
                lat.append(time.perf_counter() - t0)
            end = time.time()
            for d in (da, db):  # a full collection now, as the collector would run one some time
                assert d.proc is not None
                os.kill(d.proc.pid, signal.SIGUSR2)
            time.sleep(0.5)
    pauses: list[tuple[int, float]] = []
    forced: list[float] = []
    for line in log.read_text().splitlines():
        gen, wall, length = line.split()
        if start <= float(wall) <= end:
            pauses.append((int(gen), float(length)))
        elif float(wall) > end and gen == "2" and len(forced) < 2:
            forced.append(float(length))
    return lat, pauses, forced


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000, help="warm calls per run")
    ap.add_argument("--reps", type=int, default=2, help="runs of each kind, alternating")
    args = ap.parse_args()
    subs = [load_subscriber(SUBSCRIBERS / f"{x}.toml") for x in ("alice", "bob")]
    net = LabNetwork(subs)
    thread = LabNetworkThread(net)
    thread.start()
    results: dict[str, tuple[list[float], list[tuple[int, float]], list[float]]] = {
        k: ([], [], []) for k in KINDS
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.reps):
                for i, (kind, flag) in enumerate(KINDS.items()):
                    lat, pauses, forced = calls(net, subs, flag, args.calls, Path(tmp) / f"gc-{rep}-{i}.log")
                    results[kind][0].extend(lat)
                    results[kind][1].extend(pauses)
                    results[kind][2].extend(forced)
    finally:
        thread.stop()
    ms = 1e3
    print(f"{args.reps} x {args.calls} warm calls per kind, two daemons, the kinds alternating")
    print(
        "| daemons | collections during the calls (gen 0 / 1 / 2) | longest of them ms "
        "| a full collection after them, ms (each daemon, each run) | call p50 / p99 / p99.9 / max ms |"
    )
    print("|---|---|---|---|---|")
    for kind, (lat, pauses, forced) in results.items():
        counts = " / ".join(str(sum(1 for g, _ in pauses if g == gen)) for gen in (0, 1, 2))
        longest = f"{max(p for _, p in pauses) * ms:.3f}" if pauses else "-"
        full = ", ".join(f"{p * ms:.2f}" for p in forced)
        calls_ = " / ".join(f"{x * ms:.2f}" for x in (pct(lat, 50), pct(lat, 99), pct(lat, 99.9), max(lat)))
        print(f"| {kind} | {counts} | {longest} | {full} | {calls_} |")


if __name__ == "__main__":
    main()
