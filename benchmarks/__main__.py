"""Every benchmark, each figure beside a floor of the same shape measured in the same run.

    python -m benchmarks [--quick] [--check] [--write docs/performance.md]

Sections (each repeated ``--reps`` times, floors and agent interleaved, the order flipped
every repetition):

- socket: ``status`` and ``session.keys`` on the daemon (lab card) with 1 and 16 concurrent
  clients in a closed loop, against an asyncio ``Protocol`` NDJSON server in its own process
  answering the agent's own reply for that operation (same bytes, one ``json.loads`` and one
  ``json.dumps`` per line). p50/p99 over all requests of all repetitions; throughput =
  completed requests / wall time (median over repetitions); server CPU per request from
  /proc/PID/task/*/schedstat (benchmarks._util.cpu_s).
- status with many sessions: ``status`` p50 with few and with many open sessions.
- calls: two daemons (UE-A alice, UE-B bob) and the lab BSF/KMS on loopback: the first
  ``mikey.offer``/``mikey.answer`` after start-up (GBA bootstrap + KMS requests; the median
  over five fresh daemon pairs, one with --quick), the same call again after a reload of
  ``[network]`` (the code warm), and warm ones, against an RFC 2617 Digest-authenticated
  POST of the same size (aiohttp both sides); the daemon's CPU time per call.
  ``--no-warm-up`` runs these daemons without the warm-up (benchmarks/_no_warm_up.py).
- memory: start to READY=1 (against a bare Python process that only says READY=1), RSS
  idle after start-up and warm-up, and after the first calls.
- card: APDUs per GBA_ME and GBA_U bootstrap, renewal and first Ks_(ext_)NAF (soft UICC,
  T=0, the real card layer); AKA over AT+CSIM on a pty modem simulator against a raw pty
  round trip.
- handover: +CIREPH URC written by the modem simulator to the ``handover`` event at a
  subscribed client, against one socket round trip (the NDJSON floor, 1 client).
- idle: wakeups per second (voluntary + involuntary context switches of all the daemon's
  threads, /proc/PID/task/*/status) over ``--idle-s`` seconds (60; 5 with --quick), with
  the lab card alone and with a modem attached.

``--check`` exits 1 when a goal (the table's last section) is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks._floors import DigestHttpFloor, LoadResult, NdjsonFloor, PtyFloor, load
from benchmarks._util import SUBSCRIBERS, Daemon, cpu_s, network_config, pct, rss_kib

# --- helpers ---------------------------------------------------------------------------------------


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    load1 = os.getloadavg()[0]
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_1m_at_start": f"{load1:.2f}",
    }


@dataclass
class Stat:
    lat: list[float] = field(default_factory=list)
    thr: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)

    def add(self, r: LoadResult, cpu: float | None = None) -> None:
        self.lat += r.latencies
        self.thr.append(r.throughput)
        if cpu is not None:
            self.cpu_us.append(cpu / r.completed * 1e6)

    def p(self, q: float) -> float:
        return pct(self.lat, q) * 1e6

    @property
    def throughput(self) -> float:
        return statistics.median(self.thr)


@dataclass
class Goal:
    what: str
    value: float
    limit: float
    kind: str  # "<=" or ">="
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.kind == "<=" else self.value >= self.limit

    def row(self) -> str:
        return (
            f"| {self.what} | {self.value:.2f}{self.unit} | {self.kind} {self.limit:g}{self.unit} | "
            f"{'met' if self.met else '**MISSED**'} |"
        )


class Report:
    def __init__(self) -> None:
        self.sections: list[tuple[str, list[str]]] = []
        self.goals: list[Goal] = []
        self.notes: list[str] = []

    def table(self, title: str, header: list[str], rows: list[list[str]]) -> None:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        self.sections.append((title, lines))
        print(f"\n## {title}\n" + "\n".join(lines), flush=True)

    def goal(self, *args, **kw) -> Goal:  # type: ignore[no-untyped-def]
        g = Goal(*args, **kw)
        self.goals.append(g)
        return g

    def markdown(self) -> str:
        out = []
        for title, lines in self.sections:
            out += [f"### {title}", "", *lines, ""]
        out += ["### Goals", "", "| goal | measured | target | |", "|---|---|---|---|"]
        out += [g.row() for g in self.goals]
        if self.notes:
            out += ["", *[f"- {n}" for n in self.notes]]
        return "\n".join(out) + "\n"


def us(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


# --- socket ----------------------------------------------------------------------------------------
def socket_section(rep: Report, d: Daemon, args: argparse.Namespace) -> float:
    """Returns the NDJSON floor's p99 at 1 client (one socket round trip) in seconds."""
    from ue_agent.api.client import Client

    assert d.proc is not None
    pid = d.proc.pid
    floor = NdjsonFloor()
    try:
        with Client(d.socket) as c:
            o = c.request("sdes.offer", media=["audio"])
            a = c.request("sdes.answer", offer=[s["lines"] for s in o["streams"]])
            sid = a["session"]
            ops = {
                "status": {"op": "status"},
                "session.keys": {"op": "session.keys", "session": sid},
            }
            templates = {}
            for name, req in ops.items():
                reply = c.call(**{k: v for k, v in req.items() if k != "op"}, op=req["op"])
                assert reply.get("ok"), reply
                templates[name] = reply
        stats: dict[tuple[str, int, str], Stat] = {}
        for r in range(args.reps):
            for name, req in ops.items():
                line = json.dumps({"id": 1, **req}, separators=(",", ":")).encode() + b"\n"
                tmpl = json.dumps(templates[name], separators=(",", ":")).encode() + b"\n"
                for clients in (1, 16):
                    order = ("floor", "agent") if r % 2 == 0 else ("agent", "floor")
                    for who in order:
                        st = stats.setdefault((name, clients, who), Stat())
                        if who == "floor":
                            c0 = cpu_s(floor.proc.pid)
                            res = load(floor.path, line, clients, args.seconds, first=tmpl)
                            st.add(res, cpu_s(floor.proc.pid) - c0)
                        else:
                            c0 = cpu_s(pid)
                            res = load(d.socket, line, clients, args.seconds)
                            st.add(res, cpu_s(pid) - c0)
        rows = []
        for name in ops:
            size = len(json.dumps(templates[name], separators=(",", ":"))) + 1
            for clients in (1, 16):
                ag, fl = stats[(name, clients, "agent")], stats[(name, clients, "floor")]
                rows.append(
                    [
                        f"{name} ({size} B reply)",
                        str(clients),
                        f"{us(ag.p(50))} / {us(fl.p(50))}",
                        f"{ag.p(50) / fl.p(50):.2f}x",
                        f"{us(ag.p(99))} / {us(fl.p(99))}",
                        f"{ag.p(99) / fl.p(99):.2f}x",
                        f"{ag.throughput:,.0f} / {fl.throughput:,.0f}",
                        f"{ag.throughput / fl.throughput:.2f}x",
                        f"{statistics.median(ag.cpu_us):.0f} / {statistics.median(fl.cpu_us):.0f}",
                    ]
                )
        rep.table(
            f"Socket API: agent / floor (asyncio Protocol NDJSON, same reply), {args.reps} reps x "
            f"{args.seconds:g} s per figure",
            [
                "operation",
                "clients",
                "p50 us",
                "ratio",
                "p99 us",
                "ratio",
                "req/s",
                "ratio",
                "server CPU us/req",
            ],
            rows,
        )
        ag, fl = stats[("session.keys", 16, "agent")], stats[("session.keys", 16, "floor")]
        rep.goal("session.keys, 16 clients: p50 / floor p50", ag.p(50) / fl.p(50), 1.5, "<=", "x")
        rep.goal("session.keys, 16 clients: p99 / floor p99", ag.p(99) / fl.p(99), 1.5, "<=", "x")
        rep.goal(
            "session.keys, 16 clients: throughput / floor", ag.throughput / fl.throughput, 0.8, ">=", "x"
        )
        return stats[("status", 1, "floor")].p(99) / 1e6
    finally:
        floor.close()


def status_scaling(rep: Report, args: argparse.Namespace) -> None:
    from ue_agent.api.client import Client

    many = 1000 if args.quick else 10000
    d = Daemon(f"\n[limits]\nmax_sessions = {many + 16}\n")
    with d:
        rows, p50s = [], {}
        with Client(d.socket) as c:
            have = 0
            for target in (10, many):
                while have < target:
                    o = c.request("sdes.offer", media=["audio"])
                    c.request("sdes.answer", offer=[s["lines"] for s in o["streams"]])
                    c.request("session.close", session=o["session"])  # the offer side: closed
                    have += 1
                line = json.dumps({"id": 1, "op": "status"}).encode() + b"\n"
                st = Stat()
                for _ in range(args.reps):
                    st.add(load(d.socket, line, 1, args.seconds / 2))
                p50s[target] = st.p(50)
                rows.append([str(target), us(st.p(50)), us(st.p(99))])
        rep.table(
            "status against the number of open sessions (1 client)", ["sessions", "p50 us", "p99 us"], rows
        )
        rep.goal(f"status p50 at {many} sessions / at 10", p50s[many] / p50s[10], 1.5, "<=", "x")


# --- calls through the lab network ------------------------------------------------------------------
class FirstExchange(NamedTuple):
    """A call's first mikey.offer or mikey.answer after start-up, as measured."""

    seconds: float
    #: the HTTP requests it made one after another, the lab servers' own time for them, and
    #: the new connections they came on
    requests: int
    server_s: float
    connections: int
    #: the requests it made alongside those (the KMS's challenge, fetched while it bootstraps)
    alongside: int
    #: the daemon's CPU time meanwhile (all its threads: the event loop, the card's worker)
    cpu_s: float


class _Served(NamedTuple):
    """One request as a lab server saw it."""

    server: str
    arrived: float
    answered: float
    peer: Any


def first_exchange(seconds: float, served: list[_Served], cpu: float) -> FirstExchange:
    """``seconds`` with the requests the lab servers saw meanwhile. A KMS request that arrived
    before the bootstrap's last BSF answer went out ran alongside the bootstrap: it and the
    connection it opened are left out (counting its round trip would give the call credit
    for time it did not wait); the others ran one after another and are counted, each the
    first on its connection as a new connection."""
    bsf_done = max((r.answered for r in served if r.server == "bsf"), default=float("-inf"))
    aside = [r for r in served if r.server != "bsf" and r.arrived < bsf_done]
    path = [r for r in served if r not in aside]
    known = {r.peer for r in aside}
    return FirstExchange(
        seconds,
        len(path),
        sum(r.answered - r.arrived for r in path),
        len({r.peer for r in path} - known),
        len(aside),
        cpu,
    )


def call_section(rep: Report, args: argparse.Namespace, socket_rt_s: float) -> None:
    from ue_agent.api.client import Client
    from ue_agent.lab.network import LabNetwork, LabNetworkThread
    from ue_agent.subscriber import load_subscriber

    subs = [load_subscriber(SUBSCRIBERS / f"{x}.toml") for x in ("alice", "bob")]
    net = LabNetwork(subs)
    # the lab servers' own time per request (HSS/BSF digest, ticket issue): a real network's
    # round trip includes its server's work, so the first call's budget does too
    served: list[_Served] = []
    counter = net._counter

    def timed_counter(name: str):  # type: ignore[no-untyped-def]
        from aiohttp import web

        inner = counter(name)

        @web.middleware
        async def timing(request, handler):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return await inner(request, handler)
            finally:
                peer = request.transport.get_extra_info("peername") if request.transport else None
                served.append(_Served(name, t0, time.perf_counter(), peer))

        return timing

    net._counter = timed_counter  # type: ignore[method-assign]
    thread = LabNetworkThread(net)
    thread.start()
    network = network_config(net)
    n = 50 if args.quick else 200
    # the first call is one sample per daemon pair: it is taken on FIRST_PAIRS fresh pairs
    # (new processes, new bootstrap, new connections) per [network] bootstrap mode and the
    # median reported; the modes alternate, so that a moment of load on the shared machine
    # falls on one pair of each rather than on most pairs of one
    pairs = 1 if args.quick else FIRST_PAIRS
    #: per mode, per pair: the first offer and the first answer
    firsts: dict[str, list[tuple[FirstExchange, FirstExchange]]] = {m: [] for m in BOOTSTRAP_MODES}
    #: per mode, per pair: the same first offer and answer again after a reload (code warm)
    agains: dict[str, list[tuple[FirstExchange, FirstExchange]]] = {m: [] for m in BOOTSTRAP_MODES}

    def first(call: Callable[[], dict[str, Any]], pid: int) -> tuple[dict[str, Any], FirstExchange]:
        """``call`` timed, with the lab servers' view of it and the CPU time of daemon ``pid``."""
        s0 = len(served)
        c0 = cpu_s(pid)
        t0 = time.perf_counter()
        reply = call()
        seconds = time.perf_counter() - t0
        return reply, first_exchange(seconds, served[s0:], cpu_s(pid) - c0)

    def first_call(a: Any, b: Any, da: Daemon, db: Daemon) -> tuple[FirstExchange, FirstExchange]:
        """The offer (UE-A) and answer (UE-B) of a call that is each agent's first, completed."""
        assert da.proc is not None and db.proc is not None
        o, offer = first(
            lambda: a.request("mikey.offer", responder=subs[1].impu[0], media=["audio"]), da.proc.pid
        )
        ans, answer = first(lambda: b.request("mikey.answer", transfer_init=o["key_mgmt"]), db.proc.pid)
        a.request("mikey.complete", session=o["session"], transfer_resp=ans["key_mgmt"])
        return offer, answer

    try:
        for pair in range(pairs):
            for mode in reversed(BOOTSTRAP_MODES):  # the default last: its last pair measures warm calls
                last = mode == BOOTSTRAP_MODES[0] and pair == pairs - 1
                config = network + f'bootstrap = "{mode}"\n'
                with (
                    Daemon(config, "alice.toml", module=args.daemon) as da,
                    Daemon(config, "bob.toml", module=args.daemon) as db,
                ):
                    assert da.proc is not None and db.proc is not None
                    time.sleep(args.settle)  # the daemons' background warm-up, if any, has finished
                    rss_idle = (rss_kib(da.proc.pid), rss_kib(db.proc.pid))
                    with Client(da.socket) as a, Client(db.socket) as b:
                        # as a softphone starts: its connection made and greeted before any call
                        # (the connection's accept is not the first call's)
                        for c in (a, b):
                            c.request("hello", protocols=[1], client="benchmarks")
                        if mode == "at-start":  # both agents have bootstrapped before the call
                            _wait_bootstrapped(a, b)

                        firsts[mode].append(first_call(a, b, da, db))
                        # the same call again with the code warm: a reload of [network] retires
                        # the bootstrap, tickets, nonces and connections (at-start: and bootstraps)
                        _reload_network(a, b, da, db, at_start=mode == "at-start")
                        # after the same idle as the first call, so that both meet the machine
                        # alike (a call after an idle moment may find the CPU's caches cold)
                        time.sleep(args.settle)
                        agains[mode].append(first_call(a, b, da, db))
                        r2 = dict(net.requests)
                        if not last:
                            continue

                        warm_o, warm_a, calls, cpu_o, cpu_a = [], [], [], [], []
                        for _ in range(n):
                            c0 = cpu_s(da.proc.pid)
                            t0 = time.perf_counter()
                            o = a.request("mikey.offer", responder=subs[1].impu[0], media=["audio"])
                            t1 = time.perf_counter()
                            c1 = cpu_s(da.proc.pid), cpu_s(db.proc.pid)
                            t1b = time.perf_counter()
                            ans = b.request("mikey.answer", transfer_init=o["key_mgmt"])
                            t2 = time.perf_counter()
                            cpu_o.append(c1[0] - c0)
                            cpu_a.append(cpu_s(db.proc.pid) - c1[1])
                            a.request("mikey.complete", session=o["session"], transfer_resp=ans["key_mgmt"])
                            a.request("session.keys", session=o["session"])
                            b.request("session.keys", session=ans["session"])
                            a.request("session.close", session=o["session"])
                            b.request("session.close", session=ans["session"])
                            calls.append(time.perf_counter() - t0 - (t1b - t1))
                            warm_o.append(t1 - t0)
                            warm_a.append(t2 - t1b)
                        warm_reqs = (sum(net.requests.values()) - sum(r2.values())) / n
                        size = len(base64.b64decode(o["key_mgmt"]))
                        rss_after = (rss_kib(da.proc.pid), rss_kib(db.proc.pid))
        http = DigestHttpFloor(size)
        try:
            http_s = http.measure(size, n)
            http_new_s = http.measure_new_connection(size, 20 if args.quick else 100)
        finally:
            http.close()
    finally:
        thread.stop()
    ms = 1e3
    hp50 = statistics.median(http_s)
    wo = pct(warm_o, 50)
    wa = pct(warm_a, 50)
    hnew = statistics.median(http_new_s)

    def trips_s(e: FirstExchange) -> float:
        """What a call waited for that is not the agent's own work: each HTTP request it made
        in turn as the floor's (the first on a new connection as the floor's on a new
        connection), plus the lab servers' own time for them."""
        return e.connections * hnew + (e.requests - e.connections) * hp50 + e.server_s

    def in_turn(e: FirstExchange) -> str:
        return f"{e.requests}" + (f" (+{e.alongside} alongside the bootstrap)" if e.alongside else "")

    def trips(ex: list[FirstExchange]) -> str:
        e = ex[-1]
        server = statistics.median(x.server_s for x in ex)
        return (
            f"{e.connections} x {hnew * ms:.2f} (new connection) + {e.requests - e.connections} x "
            f"{hp50 * ms:.2f} + lab servers {server * ms:.1f}"
        )

    def cpu(ex: list[FirstExchange]) -> str:
        return f"{statistics.median(e.cpu_s for e in ex) * ms:.2f}"

    # The first call's budget: 3 x the agent's own time for the same work with the code warm
    # (the same call again after a reload: its time less its round trips), plus its own round
    # trips; per pair, then the median. Beside it, the budget read against a warm offer that
    # reuses its ticket (no bootstrap, no KMS request): a figure, not a goal (docs/performance.md).
    first_rows: list[list[str]] = []
    budget_rows: list[list[str]] = []
    ratios: dict[str, tuple[float, float]] = {}
    for mode in BOOTSTRAP_MODES:
        pairs_ = firsts[mode]
        of = f"median of {len(pairs_)} fresh daemon pairs" if len(pairs_) > 1 else "one daemon pair"
        what = (
            ("GBA bootstrap + ticket", "GBA bootstrap + ticket resolution")
            if mode == "on-demand"
            else ('bootstrap = "at-start": ticket only', 'bootstrap = "at-start": resolution only')
        )
        mode_ratios = []
        for i, (op, warm, warm_cpu) in enumerate((("offer", wo, cpu_o), ("answer", wa, cpu_a))):
            ex = [pair[i] for pair in pairs_]
            ag = [pair[i] for pair in agains[mode]]
            same = statistics.median(
                f.seconds / (3 * (g.seconds - trips_s(g)) + trips_s(f)) for f, g in zip(ex, ag, strict=True)
            )
            literal = statistics.median(f.seconds / (3 * warm + trips_s(f)) for f in ex)
            mode_ratios.append(same)
            first_, again = (statistics.median(e.seconds for e in x) for x in (ex, ag))
            first_rows += [
                [
                    f"first mikey.{op} ({what[i]}; {of})",
                    f"{first_ * ms:.1f}",
                    cpu(ex),
                    in_turn(ex[-1]),
                    trips(ex),
                ],
                [
                    f"the same mikey.{op} again in those daemons after a reload of [network] "
                    "(bootstrap, tickets, nonces, connections dropped; code warm)",
                    f"{again * ms:.1f} (first / again {first_ / again:.2f}x)",
                    cpu(ag),
                    in_turn(ag[-1]),
                    trips(ag),
                ],
            ]
            budget_rows.append(
                [
                    f"first mikey.{op}" + ("" if mode == "on-demand" else ', bootstrap = "at-start"'),
                    f"{same:.2f}x",
                    f"{literal:.2f}x",
                    f"{statistics.median(e.cpu_s for e in ex) / statistics.median(e.cpu_s for e in ag):.2f}x",
                    f"{statistics.median(e.cpu_s for e in ex) / pct(warm_cpu, 50):.1f}x",
                ]
            )
        ratios[mode] = (mode_ratios[0], mode_ratios[1])
    rows = [
        *first_rows,
        [
            "warm mikey.offer p50 / p99 (its ticket reused)",
            f"{pct(warm_o, 50) * ms:.2f} / {pct(warm_o, 99) * ms:.2f}",
            f"{pct(cpu_o, 50) * ms:.2f}",
            f"{warm_reqs:g}/call",
            f"socket RT p99 {socket_rt_s * ms:.3f}",
        ],
        [
            "warm mikey.answer p50 / p99 (its ticket reused)",
            f"{pct(warm_a, 50) * ms:.2f} / {pct(warm_a, 99) * ms:.2f}",
            f"{pct(cpu_a, 50) * ms:.2f}",
            "",
            "",
        ],
        ["whole warm call (7 requests on 2 agents) p50", f"{pct(calls, 50) * ms:.2f}", "", "", ""],
        [
            f"floor: Digest POST, {size} B each way, kept-alive connection, p50 / p99",
            f"{hp50 * ms:.2f} / {pct(http_s, 99) * ms:.2f}",
            "",
            "1",
            "",
        ],
        [
            "floor: the same POST as the first on a new connection (TCP connect included), p50 / p99",
            f"{hnew * ms:.2f} / {pct(http_new_s, 99) * ms:.2f}",
            "",
            "1",
            "",
        ],
    ]
    rep.table(
        f"Calls through two agents and the lab BSF/KMS (n={n} warm calls)",
        [
            "figure",
            "ms",
            "daemon CPU ms",
            "HTTP requests in turn",
            "floor ms: round trips + the lab servers' own time",
        ],
        rows,
    )
    rep.table(
        "The first call against its budget (per pair, median)",
        [
            "call",
            "/ (3 x the same call's own time, code warm + its round trips): the goal",
            "/ (3 x a warm offer or answer reusing its ticket + its round trips): a figure",
            "daemon CPU: first / the same call again",
            "daemon CPU: first / warm, ticket reused",
        ],
        budget_rows,
    )
    rep.table(
        "Memory (RSS)",
        ["daemon", "idle after start-up + warm-up MB", "after the calls MB"],
        [
            ["UE-A (alice, GBA_ME)", f"{rss_idle[0] / 1024:.1f}", f"{rss_after[0] / 1024:.1f}"],
            ["UE-B (bob, GBA_U)", f"{rss_idle[1] / 1024:.1f}", f"{rss_after[1] / 1024:.1f}"],
        ],
    )
    for mode in BOOTSTRAP_MODES:
        tag = "" if mode == "on-demand" else ', bootstrap = "at-start"'
        for i, op in enumerate(("offer", "answer")):
            rep.goal(
                f"first mikey.{op}{tag} / (3 x the same {op}'s own time with the code warm + its round"
                " trips: the floor's per request, new connections as new + lab servers' time)",
                ratios[mode][i],
                1.0,
                "<=",
                "x",
            )


def _reload_network(a: Any, b: Any, *daemons: Daemon, at_start: bool = False, timeout: float = 30.0) -> None:
    """Reload each daemon with new [network] settings (a longer HTTP timeout), which retires
    its bootstrap, tickets, nonces and connections: its next call does the first call's work
    again, with the code warm. ``at_start``: the reload bootstraps at once, as a start does;
    until both agents hold a new B-TID."""
    old = {c.request("status")["bootstrap"].get("btid") for c in (a, b)}
    for d in daemons:
        assert d.proc is not None
        text = d.config.read_text()
        m = re.search(r"^timeout_s = ([0-9.]+)$", text, re.M)  # from an earlier reload: one more
        if m:
            text = text.replace(m.group(0), f"timeout_s = {float(m.group(1)) + 1}", 1)
        else:
            text = text.replace("[network]\n", "[network]\ntimeout_s = 11.0\n", 1)
        d.config.write_text(text)
        os.kill(d.proc.pid, signal.SIGHUP)
    if at_start:
        _until_bootstrap(
            (a, b), lambda st: st["state"] == "bootstrapped" and st.get("btid") not in old, timeout
        )
    else:
        _until_bootstrap(
            (a, b), lambda st: st["state"] == "none", timeout, "no reload of [network] seen in status"
        )


def _wait_bootstrapped(*clients: Any, timeout: float = 30.0) -> None:
    """Until every agent's status shows the bootstrap it ran after start-up."""
    _until_bootstrap(
        clients,
        lambda st: st["state"] == "bootstrapped",
        timeout,
        '[network] bootstrap = "at-start": no bootstrap after start-up',
    )


def _until_bootstrap(
    clients: Any,
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    failure: str = '[network] bootstrap = "at-start": no bootstrap after the reload',
) -> None:
    """Until ``done`` holds for every client's agent's status bootstrap; RuntimeError(failure)
    after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not all(done(c.request("status")["bootstrap"]) for c in clients):
        if time.monotonic() > end:
            raise RuntimeError(failure)
        time.sleep(0.02)


#: the [network] bootstrap modes the first call is measured in (the default first)
BOOTSTRAP_MODES = ("on-demand", "at-start")

#: fresh daemon pairs the first mikey.offer/answer is measured on (median reported)
FIRST_PAIRS = 5

NO_PYC: dict[str, str | None] = {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "/nonexistent/uea"}
KMS_CONFIG = '\n[network]\nbsf_url = "http://127.0.0.1:9/"\nkms_url = "http://127.0.0.1:9/"\n'


def footprint(rep: Report, args: argparse.Namespace) -> None:
    """Start-up and idle RSS after the warm-up, as installed (.pyc cached) and compiling
    from source (no .pyc, as this dev container runs the agent)."""
    from benchmarks.bench_footprint import floor_once

    ready: dict[str, list[float]] = {"pyc": [], "src": [], "card": []}
    rss: dict[str, list[int]] = {"pyc": [], "src": [], "card": []}
    floor, floor_rss = [], []
    for _ in range(args.reps):
        t, r = floor_once()
        floor.append(t)
        floor_rss.append(r)
        # "card": no [network], as issue 7's round-1 figures were taken (SDES calls only)
        for kind, env, extra in (("pyc", None, KMS_CONFIG), ("src", NO_PYC, KMS_CONFIG), ("card", None, "")):
            with Daemon(extra, env=env) as d:
                assert d.proc is not None
                ready[kind].append(d.ready_s)
                time.sleep(args.settle)  # the warm-up thread has loaded the first call's modules
                rss[kind].append(rss_kib(d.proc.pid))
    med = statistics.median
    rep.table(
        "Start-up and idle memory (lab card; with a KMS URL the warm-up loads the KMS path)",
        ["", "spawn to READY=1 ms (median)", "idle RSS after warm-up MB (median)"],
        [
            [
                "ue-agent run, .pyc cached (as installed)",
                f"{med(ready['pyc']) * 1e3:.0f}",
                f"{med(rss['pyc']) / 1024:.1f}",
            ],
            [
                "ue-agent run, compiling from source (no .pyc)",
                f"{med(ready['src']) * 1e3:.0f}",
                f"{med(rss['src']) / 1024:.1f}",
            ],
            [
                "ue-agent run, .pyc cached, no KMS URL (SDES only: the warm-up loads no AES)",
                f"{med(ready['card']) * 1e3:.0f}",
                f"{med(rss['card']) / 1024:.1f}",
            ],
            [
                "floor: bare python that only says READY=1",
                f"{med(floor) * 1e3:.0f}",
                f"{med(floor_rss) / 1024:.1f}",
            ],
        ],
    )
    rep.goal("idle RSS after warm-up, as installed (.pyc), MB", med(rss["pyc"]) / 1024, 40, "<=", " MB")
    rep.goal(
        "idle RSS without a KMS URL (.pyc) against the round-1 base's 31.5 MB (issue 7), MB",
        med(rss["card"]) / 1024,
        31.5,
        "<=",
        " MB",
    )


# --- card ------------------------------------------------------------------------------------------
class _CardOps:
    def __init__(self, sub, t0: bool = True) -> None:  # type: ignore[no-untyped-def]
        from ue_agent.card.session import Card
        from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport

        self.card = Card(SoftUiccTransport(SoftUicc(sub, t0=t0)))
        self.card.identities()

    async def authenticate(self, rand: bytes, autn: bytes):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(self.card.authenticate, rand, autn)

    async def gba_bootstrap(self, rand: bytes, autn: bytes):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(self.card.gba_bootstrap, rand, autn)

    async def gba_naf_derive(self, nid: bytes, impi: str):  # type: ignore[no-untyped-def]
        return await asyncio.to_thread(self.card.gba_naf_derive, nid, impi)

    async def store_gba_bootstrap(self, rand: bytes, btid: str, lifetime: str) -> None:
        await asyncio.to_thread(self.card.store_gba_bootstrap, rand, btid, lifetime)


def gba_apdus() -> dict[str, tuple[int, int, int]]:
    """(first bootstrap, renewal, first Ks_(ext_)NAF) APDUs for alice (GBA_ME) and bob (GBA_U), T=0."""
    from ue_agent.crypto.kdf import UA_KMS
    from ue_agent.drivers.http import HttpClient
    from ue_agent.gba.client import GbaClient
    from ue_agent.lab.network import LabNetwork, LabNetworkThread
    from ue_agent.subscriber import load_subscriber

    subs = {x: load_subscriber(SUBSCRIBERS / f"{x}.toml") for x in ("alice", "bob")}
    out = {}
    with LabNetworkThread(LabNetwork(list(subs.values()))) as net:
        for name, sub in subs.items():
            ops = _CardOps(sub)

            async def go(sub=sub, ops=ops) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
                async with HttpClient() as http:
                    g = GbaClient(ops, net.bsf_url, net.bsf_fqdn, sub.impi, http, gba_u=sub.gba_u)
                    c = ops.card
                    n0 = c.apdu_count
                    await g.bootstrap()
                    n1 = c.apdu_count
                    await g.ks_naf(net.kms_fqdn, UA_KMS)
                    n2 = c.apdu_count
                    await g.bootstrap(force=True)
                    n3 = c.apdu_count
                    return n1 - n0, n3 - n2, n2 - n1

            out[name] = asyncio.run(go())
    return out


def card_section(rep: Report, args: argparse.Namespace) -> None:
    counts = gba_apdus()
    me, u = counts["alice"], counts["bob"]
    rep.table(
        "Card: APDUs per GBA run (soft UICC on T=0: every command with response data costs a GET RESPONSE)",
        ["", "first bootstrap", "renewal", "first Ks_(ext_)NAF per B-TID and NAF", "first call in all"],
        [
            ["GBA_ME (alice)", str(me[0]), str(me[1]), str(me[2]), str(me[0] + me[2])],
            ["GBA_U (bob)", str(u[0]), str(u[1]), str(u[2]), str(u[0] + u[2])],
        ],
    )
    rep.goal("GBA_U renewal APDUs", u[1], 3, "<=")
    rep.goal("GBA_U first bootstrap APDUs", u[0], 6, "<=")
    rep.goal("GBA_ME renewal APDUs", me[1], 2, "<=")

    # AKA over AT+CSIM on the pty simulator, against a raw pty round trip
    from benchmarks.bench_card import challenges
    from ue_agent.card.session import Card
    from ue_agent.drivers.at_modem import AtPort, CsimTransport
    from ue_agent.lab.modem import ModemSimulator
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    sub = load_subscriber(SUBSCRIBERS / "alice.toml")
    n = 100 if args.quick else 300
    with tempfile.TemporaryDirectory(prefix="uea-bench-") as tmp:
        link = Path(tmp) / "tty"
        sim = ModemSimulator(SoftUicc(load_subscriber(SUBSCRIBERS / "alice.toml")), "quectel-ec25", link)
        sim.start()
        floor = PtyFloor()
        try:
            card = Card(CsimTransport(AtPort(str(link), profile="quectel-ec25")))
            card.identities()
            chs = iter(challenges(sub, n * args.reps))
            aka: list[float] = []
            raw: list[float] = []
            for _ in range(args.reps):
                for _ in range(n):
                    t0 = time.perf_counter()
                    floor.roundtrip()
                    raw.append(time.perf_counter() - t0)
                for _ in range(n):
                    rand, autn = next(chs)
                    t0 = time.perf_counter()
                    card.authenticate(rand, autn)
                    aka.append(time.perf_counter() - t0)
            per = card.apdu_count
            card.close()
        finally:
            floor.close()
            sim.close()
    rep.table(
        "AT: IMS AKA via AT+CSIM on a pty modem simulator / raw pty round trip (AT -> OK)",
        ["figure", "p50 us", "p99 us"],
        [
            ["authenticate() (AT+CSIM, incl. GET RESPONSE)", us(pct(aka, 50) * 1e6), us(pct(aka, 99) * 1e6)],
            ["floor: raw pty round trip", us(pct(raw, 50) * 1e6), us(pct(raw, 99) * 1e6)],
        ],
    )
    del per


# --- handover and idle --------------------------------------------------------------------------
def modem_daemon(tmp: Path):  # type: ignore[no-untyped-def]
    from ue_agent.lab.modem import ModemSimulator
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    link = tmp / "tty"
    sim = ModemSimulator(SoftUicc(load_subscriber(SUBSCRIBERS / "alice.toml")), "generic-at", link)
    sim.start()
    return sim, Daemon(f'\n[modem]\nport = "{link}"\n')


def handover_section(rep: Report, args: argparse.Namespace) -> None:
    """+CIREPH on the pty to the ``handover`` event at a subscribed client, each sample
    followed by one round trip of the NDJSON floor (1 client, a reply of the event's size):
    the floor is measured interleaved, under the same machine load."""
    import socket as _socket

    from ue_agent.api.client import Client

    n = 100 if args.quick else 300
    floor = NdjsonFloor()
    fs = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    rt: list[float] = []
    try:
        fs.connect(floor.path)

        def floor_rt(i: int) -> float:
            t0 = time.perf_counter()
            fs.sendall(b'{"id":%d}\n' % i)
            buf = b""
            while not buf.endswith(b"\n"):
                buf += fs.recv(65536)
            return time.perf_counter() - t0

        with tempfile.TemporaryDirectory(prefix="uea-bench-") as tmp:
            sim, d = modem_daemon(Path(tmp))
            try:
                with d, Client(d.socket) as c:
                    c.request("subscribe", events=["handover"])
                    time.sleep(args.settle)  # the daemon's background warm-up has finished
                    for _ in range(200):
                        if sim.srvcc(2):
                            break
                        time.sleep(0.05)
                    event = c.next_event()
                    fs.sendall(json.dumps(event, separators=(",", ":")).encode() + b"\n")  # the reply
                    for i in range(20):
                        floor_rt(i)
                    lat = []
                    for i in range(n * args.reps):
                        t0 = time.perf_counter()
                        sim.srvcc(0 if i % 2 == 0 else 2)  # started / cancelled
                        c.next_event()
                        lat.append(time.perf_counter() - t0)
                        rt.append(floor_rt(i))
            finally:
                sim.close()
    finally:
        fs.close()
        floor.close()
    p99, floor_p99 = pct(lat, 99), pct(rt, 99)
    rep.table(
        "Handover: +CIREPH written on the pty to the handover event at a client",
        ["figure", "p50 us", "p99 us"],
        [
            ["URC -> event", us(pct(lat, 50) * 1e6), us(p99 * 1e6)],
            [
                "floor: one socket round trip (NDJSON floor, 1 client, the event's size; interleaved)",
                us(pct(rt, 50) * 1e6),
                us(floor_p99 * 1e6),
            ],
        ],
    )
    rep.goal("URC -> event p99 / one socket round trip p99", p99 / floor_p99, 3, "<=", "x")


def idle_section(rep: Report, args: argparse.Namespace) -> None:
    results: dict[str, float] = {}

    def measure(name: str, d: Daemon) -> None:
        assert d.proc is not None
        time.sleep(args.settle)
        s0 = switches(d.proc.pid)
        time.sleep(args.idle_s)
        results[name] = (switches(d.proc.pid) - s0) / args.idle_s

    threads = []
    with tempfile.TemporaryDirectory(prefix="uea-bench-") as tmp:
        sim, dm = modem_daemon(Path(tmp))
        try:
            with Daemon() as dl, dm:  # measured at the same time: one window for both
                for name, d in (("lab card", dl), ("lab card + modem on a pty", dm)):
                    t = threading.Thread(target=measure, args=(name, d))
                    t.start()
                    threads.append(t)
                for t in threads:
                    t.join()
        finally:
            sim.close()
    rep.table(
        f"Idle wakeups (context switches of all threads over {args.idle_s:g} s, nothing happening)",
        ["daemon", "wakeups/s"],
        [[k, f"{v:.2f}"] for k, v in results.items()],
    )
    rep.goal("idle wakeups/s with a modem attached", results["lab card + modem on a pty"], 0.05, "<=", "/s")


# --- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short windows (CI, development)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    ap.add_argument("--write", metavar="PATH", help="write the results into this markdown file")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, help="per load figure (default 2; 0.5 with --quick)")
    ap.add_argument("--idle-s", type=float, help="idle window (default 60; 5 with --quick)")
    ap.add_argument("--only", help="comma-separated sections: socket,status,calls,startup,card,handover,idle")
    ap.add_argument(
        "--no-warm-up",
        action="store_true",
        help="the calls' daemons skip the warm-up: what the first-call goals catch (not with --write)",
    )
    args = ap.parse_args(argv)
    if args.no_warm_up and args.write:
        ap.error("--no-warm-up measures a daemon that is not the agent: its figures are not for --write")
    args.daemon = "benchmarks._no_warm_up" if args.no_warm_up else "ue_agent"
    args.seconds = args.seconds or (0.5 if args.quick else 2.0)
    args.idle_s = args.idle_s or (5.0 if args.quick else 60.0)
    args.settle = 2.0
    only = set((args.only or "socket,status,calls,startup,card,handover,idle").split(","))
    started = time.time()
    # every daemon runs as installed: bytecode cached (the first start fills the cache)
    pyc = tempfile.mkdtemp(prefix="uea-pyc-", dir="/tmp")
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = pyc
    with Daemon(KMS_CONFIG):
        time.sleep(args.settle)
    info = machine()
    command = "python -m benchmarks " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# {command}\n# " + ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    rep = Report()
    socket_rt = 0.0
    if "socket" in only or "calls" in only:
        d = Daemon()
        d.config.write_text(d.config.read_text().replace("[api]\n", "[api]\nmax_clients = 32\n"))
        with d:
            if "socket" in only:
                socket_rt = socket_section(rep, d, args)
            else:
                floor = NdjsonFloor()
                try:
                    line = b'{"id":1,"op":"status"}\n'
                    socket_rt = pct(load(floor.path, line, 1, args.seconds, first=line).latencies, 99)
                finally:
                    floor.close()
    if "status" in only:
        status_scaling(rep, args)
    if "calls" in only:
        call_section(rep, args, socket_rt)
    if "startup" in only:
        footprint(rep, args)
    if "card" in only:
        card_section(rep, args)
    if "handover" in only:
        handover_section(rep, args)
    if "idle" in only:
        idle_section(rep, args)
    shutil.rmtree(pyc, ignore_errors=True)  # after the last daemon: each ran as installed
    print(
        "\n## Goals\n| goal | measured | target | |\n|---|---|---|---|\n"
        + "\n".join(g.row() for g in rep.goals)
    )
    took = time.time() - started
    if args.write:
        write(Path(args.write), rep, info, command, took)
    missed = [g for g in rep.goals if not g.met]
    print(f"\n{len(rep.goals) - len(missed)} of {len(rep.goals)} goals met ({took:.0f} s)")
    return 1 if (args.check and missed) else 0


BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def write(path: Path, rep: Report, info: dict[str, str], command: str, took: float) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = (
        f"{BEGIN}\nMeasured {stamp} with `{command}` ({took:.0f} s) on: "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + ".\n\n"
        + rep.markdown()
        + END
    )
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + body + text[text.index(END) + len(END) :]
    else:
        text = text + ("\n" if text else "") + body + "\n"
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
