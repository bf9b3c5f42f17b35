"""Card round trips: APDUs and latency of reading identities and of one AKA, per transport.

    python -m benchmarks.bench_card [--n N] [--no-pcsc]

Each transport's floor is its own cheapest round trip, measured in the same run: one
STATUS APDU (in process, PC/SC through pcscd and vpcd) or a bare AT/OK on the pty. The
figures say what the card layer adds on top of the path it cannot avoid.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks._util import SUBSCRIBERS, summary, timed
from ue_agent.card.session import Card
from ue_agent.crypto.milenage import Milenage
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport
from ue_agent.subscriber import load_subscriber

STATUS = bytes.fromhex("80F2000000")


def challenges(sub, n: int) -> list[tuple[bytes, bytes]]:
    m = Milenage(sub.k.reveal(), sub.opc.reveal())
    out = []
    for i in range(n):
        rand = os.urandom(16)
        out.append((rand, m.generate_autn(rand, (sub.sqn + 1 + i).to_bytes(6, "big"), sub.amf)))
    return out


def measure(name: str, transport, floor, sub, n: int) -> list[str]:
    floor_s = timed(floor, n)
    card = Card(transport)
    t0 = time.perf_counter()
    card.identities()
    ids_s = time.perf_counter() - t0
    ids_apdus = card.apdu_count
    aka_s = []
    for rand, autn in challenges(sub, n):
        before = card.apdu_count
        t0 = time.perf_counter()
        card.authenticate(rand, autn)
        aka_s.append(time.perf_counter() - t0)
        aka_apdus = card.apdu_count - before
    card.close()
    return [
        f"[{name}] identities(): {ids_apdus} APDUs in {ids_s * 1000:.1f} ms; AKA: {aka_apdus} APDU(s) each",
        "  " + summary("floor: one raw round trip", floor_s),
        "  " + summary("authenticate() (IMS AKA)", aka_s, floor_s),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--no-pcsc", action="store_true")
    args = ap.parse_args()
    sub = load_subscriber(SUBSCRIBERS / "alice.toml")
    rows: list[str] = []

    for t0 in (True, False):
        uicc = SoftUicc(load_subscriber(SUBSCRIBERS / "alice.toml"), t0=t0)
        tr = SoftUiccTransport(uicc)
        rows += measure(
            f"in process, T={'0' if t0 else '1'}", tr, lambda tr=tr: tr.transmit(STATUS), sub, args.n
        )

    from ue_agent.drivers.at_modem import AtPort, CsimTransport
    from ue_agent.lab.modem import ModemSimulator

    with tempfile.TemporaryDirectory(prefix="uea-bench-") as d:
        link = Path(d) / "tty"
        sim = ModemSimulator(SoftUicc(load_subscriber(SUBSCRIBERS / "alice.toml")), "quectel-ec25", link)
        sim.start()
        try:
            port = AtPort(str(link), profile="quectel-ec25")
            rows += measure(
                "AT+CSIM on a pty (quectel-ec25)",
                CsimTransport(port),
                lambda: port.command("AT"),
                sub,
                args.n,
            )
        finally:
            sim.close()

    if not args.no_pcsc:
        from ue_agent.lab import pcscd as pcsc

        with pcsc.machine_lock(timeout=120):  # released even if a measurement fails
            try:
                daemon = pcsc.ensure()
            except pcsc.PcscdUnavailable as exc:
                rows.append(f"[PC/SC] skipped: {exc}")
            else:
                from ue_agent.drivers.pcsc import PcscTransport
                from ue_agent.lab.vpcd import VpcdCard

                uicc = SoftUicc(load_subscriber(SUBSCRIBERS / "alice.toml"))
                card = VpcdCard(uicc, "127.0.0.1", daemon.port)
                card.start()
                try:
                    card.wait_connected(10)
                    tr = PcscTransport(daemon.readers[0])
                    tr.wait_for_card(10)
                    rows += measure(
                        f"PC/SC: pyscard -> pcscd -> vpcd ({tr.name})",
                        tr,
                        lambda: tr.transmit(STATUS),
                        sub,
                        args.n,
                    )
                finally:
                    card.stop()
                    pcsc.release(daemon)
    from benchmarks.__main__ import gba_apdus

    for name, (first, renewal, naf) in gba_apdus().items():
        rows.append(
            f"[GBA, soft UICC T=0, {name}] APDUs: first bootstrap {first}, renewal {renewal}, "
            f"first Ks_(ext_)NAF per B-TID and NAF {naf}"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
