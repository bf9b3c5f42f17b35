"""The AT path under the transport behaviours of issue 9, and recovery after resets.

    python -m benchmarks.bench_modem [--runs N]

1. Each replayed behaviour (late, split, noise, NUL, CR-only, SIM busy, missing OK, no
   length field, ATV0, silent "=?") under one identities() read over AT+CSIM (generic-at,
   command timeout 1 s): right identities or not, time, APDUs, resyncs, late lines dropped,
   APDUs sent again.
2. Reset recovery through the daemon on the pty modem: RDY/+CPIN: READY between two
   ims.authenticate calls, time from the reset to the second answer (the issue asks < 10 s);
   and the same with a silent restart (no URC: the first request gets card.reset).
3. Six SIGKILL restarts on a card with 4 logical channels: AKA after each, channels left.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._util import REPO, SUBSCRIBERS
from ue_agent.card.session import Card
from ue_agent.crypto.milenage import Milenage
from ue_agent.drivers.at_modem import open_modem_transport
from ue_agent.lab.modem import ModemSimulator
from ue_agent.lab.uicc import SoftUicc
from ue_agent.subscriber import load_subscriber

ALICE = SUBSCRIBERS / "alice.toml"

BEHAVIOURS: list[tuple[str, list[tuple[str, dict]], dict]] = [
    ("none", [], {}),
    ("late answer (1.6 s, timeout 1 s)", [("late", {"match": "AT+CSIM", "skip": 4, "delay": 1.6})], {}),
    (
        "late answer split in 5",
        [("late", {"match": "AT+CSIM", "skip": 4, "delay": 1.2, "pieces": 5, "gap": 0.1})],
        {},
    ),
    (
        "slow answer within timeout",
        [("late", {"match": "AT+CSIM", "skip": 4, "delay": 0.4, "pieces": 3})],
        {},
    ),
    ("noise before (PB DONE, 0,1)", [("noise", {"match": "AT+CSIM", "lines": ["PB DONE", "0,1"]})], {}),
    ("noise between lines", [("noise", {"match": "AT+CSIM", "skip": 3, "where": "between"})], {}),
    ("NULs x3", [("nul", {"match": "AT+CSIM"})] * 3, {}),
    ("CR-only lines x3", [("cr_only", {"match": "AT+CSIM"})] * 3, {}),
    ("SIM busy once", [("busy", {"match": "AT+CSIM", "skip": 2})], {}),
    ("missing OK once", [("missing_ok", {"match": "AT+CSIM", "skip": 5})], {}),
    ("missing OK on MANAGE CHANNEL", [("missing_ok", {"match": 'AT+CSIM=10,"0070000001'})], {}),
    ("+CSIM without length x10", [("no_length", {"match": "AT+CSIM"})] * 10, {}),
    ("ATV0 at power-on", [], {"verbose_default": False}),
    ("silent =? test commands", [], {"silent_test_commands": True}),
]


def behaviours(tmp: Path) -> None:
    print("1. identities() over AT+CSIM (generic-at, timeout 1 s) under each behaviour")
    print(f"   {'behaviour':36} {'ok':>3} {'ms':>6} {'APDUs':>5} {'resync':>6} {'late':>4} {'again':>5}")
    for i, (name, shapes, attrs) in enumerate(BEHAVIOURS):
        uicc = SoftUicc(load_subscriber(ALICE))
        sim = ModemSimulator(uicc, "generic-at", tmp / f"tty{i}")
        for k, v in attrs.items():
            setattr(sim, k, v)
        sim.start()
        try:
            t = open_modem_transport(str(sim.link_path), timeout=1.0)
            for kind, kw in shapes:
                sim.shape_next(kind, **kw)
            card = Card(t)
            t0 = time.perf_counter()
            try:
                ids = card.identities()
                ok = ids.impi == uicc.subscriber.impi and ids.impus == list(uicc.subscriber.impu)
            except Exception as exc:  # noqa: BLE001 - a figure, not a test
                ok, ids = False, exc
            ms = (time.perf_counter() - t0) * 1000
            port = t.port
            print(
                f"   {name:36} {'yes' if ok else 'NO':>3} {ms:6.0f} {card.apdu_count:5d} "
                f"{port.resyncs:6d} {port.late_lines:4d} {t.retries:5d}"
            )
            card.close()
        finally:
            sim.close()


def _aka(sock: str, sqn: int) -> tuple[dict, float]:
    from ue_agent.api.client import Client

    sub = load_subscriber(ALICE)
    rand = os.urandom(16)
    autn = Milenage(sub.k.reveal(), sub.opc.reveal()).generate_autn(rand, sqn.to_bytes(6, "big"), sub.amf)
    with Client(sock, timeout=30) as c:
        t0 = time.perf_counter()
        reply = c.call(
            "ims.authenticate", rand=base64.b64encode(rand).decode(), autn=base64.b64encode(autn).decode()
        )
        return reply, time.perf_counter() - t0


def _daemon(d: Path, port: str, profile: str) -> subprocess.Popen:
    sock = d / "api.sock"
    (d / "config.toml").write_text(
        f'[card]\ntransport = "at"\nport = "{port}"\nprofile = "{profile}"\n\n'
        f'[modem]\nport = "{port}"\n\n[api]\nsocket = "{sock}"\n\n[log]\nlevel = "warning"\n'
    )
    notify_path = d / "notify.sock"
    if notify_path.exists():
        notify_path.unlink()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ue_agent", "run", "--config", str(d / "config.toml")],
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    notify.settimeout(30)
    while b"READY=1" not in notify.recv(4096):
        pass
    notify.close()
    return proc


def resets(tmp: Path, runs: int) -> None:
    print("2. modem + card reset between two ims.authenticate (daemon on the pty modem)")
    for profile in ("generic-at", "quectel-rm500q", "sierra-em7455"):
        for silent in (False, True):
            uicc = SoftUicc(load_subscriber(ALICE))
            sim = ModemSimulator(uicc, profile, tmp / f"reset-{profile}").start()
            d = Path(tempfile.mkdtemp(prefix="uea-bench-", dir="/tmp"))
            proc = _daemon(d, str(sim.link_path), profile)
            times, failed_first = [], 0
            try:
                sqn = uicc.highest_sqn + 1
                _aka(str(d / "api.sock"), sqn)
                for _ in range(runs):
                    sqn += 1
                    t0 = time.perf_counter()
                    sim.reset_modem(urcs=() if silent else ("RDY", "+CPIN: READY", "SMS DONE", "PB DONE"))
                    reply, _ = _aka(str(d / "api.sock"), sqn)
                    if not reply.get("ok"):
                        failed_first += 1
                        sqn += 1
                        reply, _ = _aka(str(d / "api.sock"), sqn)
                    assert reply.get("ok"), reply
                    times.append(time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.wait(10)
                sim.close()
                shutil.rmtree(d, ignore_errors=True)
            how = "silent restart" if silent else "RDY/+CPIN: READY"
            print(
                f"   {profile:15} {how:17} reset -> AKA answered: max {max(times):.3f} s, "
                f"median {sorted(times)[len(times) // 2]:.3f} s over {runs}; first request failed "
                f"(card.reset) {failed_first}/{runs}"
            )


def restarts(tmp: Path) -> None:
    print("3. six SIGKILL restarts, card with 4 logical channels (generic-at, MANAGE CHANNEL)")
    uicc = SoftUicc(load_subscriber(ALICE))
    sim = ModemSimulator(uicc, "generic-at", tmp / "kill").start()
    d = Path(tempfile.mkdtemp(prefix="uea-bench-", dir="/tmp"))
    try:
        for run in range(7):
            proc = _daemon(d, str(sim.link_path), "generic-at")
            reply, s = _aka(str(d / "api.sock"), uicc.highest_sqn + 1)
            print(
                f"   start {run + 1}: AKA {'ok' if reply.get('ok') else reply} in {s * 1000:.0f} ms, "
                f"open channels {uicc.open_channels}"
            )
            proc.send_signal(signal.SIGKILL if run < 6 else signal.SIGTERM)
            proc.wait(10)
        print(f"   after a clean stop: open channels {uicc.open_channels}")
    finally:
        sim.close()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # the driver's warnings (resyncs...) are counted above
    tmp = Path(tempfile.mkdtemp(prefix="uea-bench-modem-"))
    try:
        behaviours(tmp)
        resets(tmp, args.runs)
        restarts(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
