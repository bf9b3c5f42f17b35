"""Call set-up through two agents: SDES, a first KMS call (GBA + tickets) and a repeated one.

    python -m benchmarks.bench_call [--n N] [--rtt-ms MS]

Two ``ue-agent run`` daemons (UE-A alice, UE-B bob, lab cards) and the lab network on
loopback. Floors measured in the same run: an RFC 2617 Digest-authenticated POST of the
size of the offer's MIKEY message each way (aiohttp both sides, kept-alive connection; the
server checks the digest) and one raw Unix-socket echo. Also prints the KMS
and BSF requests each kind of call costs, and the daemons' RSS before and after the calls.

``--rtt-ms MS`` makes the lab BSF and KMS wait MS before they handle each request, as servers
a radio network away would; the first call's offer and answer are then printed in units of
that round trip (how many of its requests it waited for one after another).
"""

from __future__ import annotations

import argparse
import base64
import json
import time

from benchmarks._floors import DigestHttpFloor
from benchmarks._util import SUBSCRIBERS, Daemon, EchoFloor, network_config, rss_kib, summary, timed
from ue_agent.api.client import Client
from ue_agent.lab.network import LabNetwork, LabNetworkThread
from ue_agent.subscriber import load_subscriber


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="the lab servers' delay per request")
    args = ap.parse_args()
    n = args.n
    rtt = args.rtt_ms / 1e3
    subs = [load_subscriber(SUBSCRIBERS / f"{x}.toml") for x in ("alice", "bob")]
    net = LabNetwork(subs)
    net.faults.bsf_delay_s = net.faults.kms_delay_s = rtt
    thread = LabNetworkThread(net)
    thread.start()
    try:
        network = network_config(net)
        floor = EchoFloor()
        line = json.dumps({"id": 1, "op": "status"}).encode() + b"\n"
        echo_s = timed(lambda: floor.roundtrip(line), 2000)
        floor.close()
        with (
            Daemon(network, "alice.toml") as da,
            Daemon(network, "bob.toml") as db,
            Client(da.socket) as a,
            Client(db.socket) as b,
        ):
            time.sleep(2.0)  # the warm-up after READY=1 has loaded the first call's modules
            rss0 = (rss_kib(da.proc.pid), rss_kib(db.proc.pid))

            def sdes() -> None:
                o = a.request("sdes.offer", media=["audio"])
                ans = b.request("sdes.answer", offer=[s["lines"] for s in o["streams"]])
                a.request("sdes.answer", session=o["session"], answer=[s["lines"] for s in ans["streams"]])
                a.request("session.keys", session=o["session"])
                b.request("session.keys", session=ans["session"])
                a.request("session.close", session=o["session"])
                b.request("session.close", session=ans["session"])

            steps: list[float] = []

            def mikey() -> dict:
                t = time.perf_counter()
                o = a.request("mikey.offer", responder=subs[1].impu[0], media=["audio"])
                t1 = time.perf_counter()
                ans = b.request("mikey.answer", transfer_init=o["key_mgmt"])
                steps[:] = [t1 - t, time.perf_counter() - t1]
                a.request("mikey.complete", session=o["session"], transfer_resp=ans["key_mgmt"])
                a.request("session.keys", session=o["session"])
                b.request("session.keys", session=ans["session"])
                a.request("session.close", session=o["session"])
                b.request("session.close", session=ans["session"])
                return o

            before = dict(net.requests)
            t0 = time.perf_counter()
            first = mikey()
            first_s = time.perf_counter() - t0
            first_steps = list(steps)
            first_cost = {k: net.requests[k] - before.get(k, 0) for k in net.requests}
            before = dict(net.requests)
            repeat_s = timed(mikey, n)
            size = len(base64.b64decode(first["key_mgmt"].split()[-1]))
            hf = DigestHttpFloor(size)
            try:
                http_s = hf.measure(size, n)
            finally:
                hf.close()
            repeat_cost = {k: (net.requests[k] - before.get(k, 0)) / n for k in net.requests}
            sdes_s = timed(sdes, n)
            rss1 = (rss_kib(da.proc.pid), rss_kib(db.proc.pid))
        in_rtt = (
            f" = {first_steps[0] / rtt:.2f} / {first_steps[1] / rtt:.2f} round trips of {args.rtt_ms:g} ms"
            if rtt
            else ""
        )
        rows = [
            summary("floor: raw Unix-socket echo", echo_s),
            summary(f"floor: Digest POST, {size} B each way", http_s),
            f"{'first KMS call (GBA + tickets)':<34} {first_s * 1000:8.1f} ms once; "
            f"requests {first_cost}; reused_ticket={first['reused_ticket']}",
            f"{'  its offer / answer':<34} {first_steps[0] * 1e3:8.1f} / {first_steps[1] * 1e3:.1f} ms"
            + in_rtt,
            summary("repeated KMS call (ticket reuse)", repeat_s, http_s) + f"  requests/call {repeat_cost}",
            summary("SDES call", sdes_s, echo_s),
            f"RSS UE-A {rss0[0] / 1024:.1f} -> {rss1[0] / 1024:.1f} MB, UE-B {rss0[1] / 1024:.1f} -> "
            f"{rss1[1] / 1024:.1f} MB after {2 * n + 1} calls",
        ]
        print("\n".join(rows))
    finally:
        thread.stop()


if __name__ == "__main__":
    main()
