"""``ue-agent demo``: the whole product on the embedded lab, end to end, with a timeline.

What runs, all on this machine:
- the lab network (HSS, BSF, KMS; each its own HTTP listener on loopback);
- UE-A: a soft UICC behind a modem simulator on a pty (quectel-ec25 dialect): the agent
  reaches the card with AT+CSIM and hears SRVCC reports (+CIREPH) on the same port;
- UE-B: a soft UICC in a vpcd virtual reader, reached through pyscard and pcscd (when
  pcscd and vpcd are installed; otherwise in process, and the timeline says so);
- UE-C: a USIM-only soft card in process (identities derived from the IMSI);
- one ``ue-agent run`` daemon per UE, driven only through its socket as a softphone would.

Keys are never printed: the timeline shows lengths and whether both ends agree.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ue_agent.errors import AgentError

if TYPE_CHECKING:
    from ue_agent.api.client import Client
    from ue_agent.lab.modem import ModemSimulator
    from ue_agent.lab.network import LabNetwork

SUBSCRIBERS = Path(__file__).parent / "subscribers"
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m")


class Timeline:
    """Prints what happens, with the time since the demo started."""

    def __init__(self, color: bool) -> None:
        self.t0 = time.monotonic()
        self.color = color

    def _c(self, code: str, text: str) -> str:
        return f"{code}{text}{RESET}" if self.color else text

    def section(self, title: str) -> None:
        print(f"\n{self._c(BOLD, '== ' + title)}", flush=True)

    def event(self, who: str, text: str) -> None:
        print(f"  {self._c(DIM, f'{time.monotonic() - self.t0:7.2f}s')}  {who:<6} {text}", flush=True)

    def verdict(self, ok: bool, text: str) -> None:
        mark = self._c(GREEN, "PASS") if ok else self._c(RED, "FAIL")
        print(f"  {'':8}  {mark}   {text}", flush=True)


@dataclass
class Ue:
    """One handset: its subscriber, its card path, its daemon and a client on its socket."""

    name: str
    subscriber: Path
    impu: str
    impi: str
    card_path: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    client: Client | None = None
    on_reply: Callable[[str, str, dict[str, Any]], None] | None = None

    @property
    def socket(self) -> str:
        return str(self.dir / "api.sock")

    def call(self, op: str, **params: Any) -> dict[str, Any]:
        assert self.client is not None, "the daemon's client is connected first"
        reply = self.client.request(op, **params)
        if self.on_reply is not None:
            self.on_reply(self.name, op, reply)
        return reply


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(notify: socket.socket, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    notify.settimeout(0.2)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if b"READY=1" in notify.recv(4096):
                return
        except TimeoutError:
            continue
    raise RuntimeError("daemon did not become ready")


class Lab:
    """Everything the scenarios need, started once and stopped in reverse order."""

    def __init__(self, workdir: Path, tl: Timeline) -> None:
        self.dir = workdir
        self.tl = tl
        self.stack = contextlib.ExitStack()
        self.ues: dict[str, Ue] = {}
        self._net: LabNetwork | None = None
        self._modem: ModemSimulator | None = None

    @property
    def net(self) -> LabNetwork:
        assert self._net is not None, "start_network() first"
        return self._net

    @property
    def modem(self) -> ModemSimulator:
        assert self._modem is not None, "start_modem() first"
        return self._modem

    # -- parts -----------------------------------------------------------------------------
    def start_network(self) -> None:
        from ue_agent.lab.network import LabNetwork, LabNetworkThread
        from ue_agent.subscriber import load_subscriber

        subs = [load_subscriber(self.dir / f"{n}.toml") for n in ("alice", "bob", "carol")]
        net = LabNetwork(subs, focus=load_subscriber(SUBSCRIBERS / "focus.toml"))
        thread = LabNetworkThread(net)
        thread.start()
        self.stack.callback(thread.stop)
        self._net = net
        self.tl.event("lab", f"HSS+BSF {net.bsf_url} ({net.bsf.fqdn})")
        self.tl.event("lab", f"KMS     {net.kms_url} ({net.naf_auth.naf_fqdn})")
        self.tl.event("lab", f"focus   {net.focus_url} (MRFC/MRFP, conference URIs of focus.toml)")

    def start_modem(self, sub_path: Path) -> str:
        from ue_agent.lab.modem import ModemSimulator
        from ue_agent.lab.uicc import SoftUicc
        from ue_agent.subscriber import load_subscriber

        link = self.dir / "ttyUE-A"
        sim = ModemSimulator(SoftUicc(load_subscriber(sub_path)), "quectel-ec25", link)
        sim.start()
        self.stack.callback(sim.close)
        self._modem = sim
        self.tl.event("UE-A", f"modem simulator (quectel-ec25 dialect) on pty {link}")
        return str(link)

    def start_reader(self, sub_path: Path, pcscd=None) -> str | None:
        """A vpcd reader with the card in it; None when PC/SC cannot run here.

        ``pcscd``: a running :class:`ue_agent.lab.pcscd.Pcscd` whose readers the caller
        already holds (the test session's); otherwise the demo takes the machine's lock and
        adopts or starts pcscd itself.
        """
        from ue_agent.lab import pcscd as pcsc
        from ue_agent.lab.uicc import SoftUicc
        from ue_agent.lab.vpcd import VpcdCard
        from ue_agent.subscriber import load_subscriber

        if pcscd is None:
            try:
                self.stack.enter_context(pcsc.machine_lock(timeout=30))
                pcscd = pcsc.ensure()
            except (pcsc.PcscdUnavailable, TimeoutError) as exc:
                self.tl.event("UE-B", f"no PC/SC here ({exc}); UE-B's card stays in process")
                return None
            self.stack.callback(pcsc.release, pcscd)
        card = VpcdCard(SoftUicc(load_subscriber(sub_path)), "127.0.0.1", pcscd.port)
        card.start()
        self.stack.callback(card.stop)
        if not card.wait_connected(10):
            raise RuntimeError("the vpcd card did not connect to pcscd")
        self.tl.event("UE-B", f"soft UICC in PC/SC reader '{pcscd.readers[0]}' (pcscd + vpcd)")
        return pcscd.readers[0]

    def start_daemon(self, ue: Ue, card: dict, modem_port: str | None = None) -> None:
        from ue_agent.api.client import Client

        ue.dir.mkdir(parents=True, exist_ok=True)
        lines = ["[card]"] + [f'{k} = "{v}"' for k, v in card.items()]
        lines += [
            "",
            "[network]",
            f'bsf_url = "{self.net.bsf_url}"',
            f'kms_url = "{self.net.kms_url}"',
            f'bsf_fqdn = "{self.net.bsf.fqdn}"',
            f'kms_fqdn = "{self.net.naf_auth.naf_fqdn}"',
            "",
            "[api]",
            f'socket = "{ue.socket}"',
            "",
            "[log]",
            'level = "debug"',
        ]
        if modem_port:
            lines += ["", "[modem]", f'port = "{modem_port}"']
        if ue.name == "UE-A":  # A's user wants KMS-grade calls, answered by the party called
            lines += ["", "[policy]", 'minimum = { audio = "e2e" }', 'responder = "called"']
        config = ue.dir / "config.toml"
        config.write_text("\n".join(lines) + "\n")
        notify_path = ue.dir / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        log = ue.dir / "daemon.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:
            ue.proc = subprocess.Popen(
                [sys.executable, "-m", "ue_agent", "-vv", "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.stack.callback(self._stop_daemon, ue, notify)
        _wait_ready(notify, ue.proc, log)
        ue.client = Client(ue.socket, timeout=30)
        hello = ue.call("hello", client=f"demo-{ue.name}")
        self.tl.event(
            ue.name,
            f"ue-agent run ready (pid {ue.proc.pid}, protocol {hello.get('protocol')}), "
            f"card via {ue.card_path}",
        )

    @staticmethod
    def _stop_daemon(ue: Ue, notify: socket.socket) -> None:
        if ue.client is not None:
            with contextlib.suppress(Exception):
                ue.client.close()
        if ue.proc is not None and ue.proc.poll() is None:
            ue.proc.send_signal(signal.SIGTERM)
            try:
                ue.proc.wait(15)
            except subprocess.TimeoutExpired:
                ue.proc.kill()
                ue.proc.wait()
        notify.close()

    def close(self) -> None:
        self.stack.close()


# -- helpers used by the scenarios -------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def srtp_roundtrip(tx_keys: dict, rx_keys: dict, count: int = 1000, ssrc: int = 0x1234ABCD) -> int:
    """Protect ``count`` RTP packets with one side's keys, unprotect them with the other's."""
    import pylibsrtp

    profiles = {
        "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
        "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
        "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    }

    def session(k: dict, direction: int) -> pylibsrtp.Session:
        key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
        return pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=profiles[k["suite"]])
        )

    tx = session(tx_keys, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    rx = session(rx_keys, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    ok = 0
    for seq in range(count):
        payload = bytes([seq & 0xFF]) * 160
        rtp = bytes([0x80, 0x00]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
        rtp += ssrc.to_bytes(4, "big") + payload
        if rx.unprotect(tx.protect(rtp)) == rtp:
            ok += 1
    return ok


def stream_keys(keys_reply: dict, media: str, direction: str) -> dict:
    """One stream's key for ``direction`` ("tx"/"rx"); a TLS-PSK stream has one key for both."""
    for s in keys_reply["streams"]:
        if s.get("media", "audio") == media:
            return s.get(direction) or s["tx"]
    raise AssertionError(f"no {media} stream in {sorted(keys_reply)}")


# -- scenarios ---------------------------------------------------------------------------

Scenario = Callable[[Lab], str]
SCENARIOS: list[tuple[str, str, Scenario]] = []


def scenario(name: str, title: str):
    def register(fn: Scenario) -> Scenario:
        SCENARIOS.append((name, title, fn))
        return fn

    return register


@scenario("cards", "Cards: identities over AT+CSIM, PC/SC and in process")
def sc_cards(lab: Lab) -> str:
    for ue in lab.ues.values():
        # A PC/SC reader can come up after the agent: the agent reads the card when it arrives
        # (a `card` event), so give it a bounded moment, as a softphone waiting on that event would.
        deadline = time.monotonic() + 10.0
        card = ue.call("status")["card"]
        while card.get("impi") is None and time.monotonic() < deadline:
            time.sleep(0.1)
            card = ue.call("status")["card"]
        impus = ", ".join(card.get("impus", []))
        lab.tl.event(
            ue.name, f"{card['transport']}: {str(card.get('application')).upper()}, IMPI {card.get('impi')}"
        )
        lab.tl.event(ue.name, f"{'':5}IMPUs {impus}")
        assert card.get("impi") == ue.impi, f"{ue.name}: IMPI {card.get('impi')} != {ue.impi}"
    return "each agent read its own card's identities"


@scenario("register", "IMS registration: AKA challenges answered through each agent's card")
def sc_register(lab: Lab) -> str:
    for ue in lab.ues.values():
        av = lab.net.hss.vector(ue.impi)
        r = ue.call("ims.authenticate", rand=b64(av.rand), autn=b64(av.autn))
        res = base64.b64decode(r["res"])
        assert av.xres == res, f"{ue.name}: RES != XRES"
        lab.tl.event(
            ue.name,
            f"REGISTER 401 -> AKA SQN {av.sqn}: RES {len(res)} bytes = XRES, "
            f"CK/IK {len(base64.b64decode(r['ck']))}/{len(base64.b64decode(r['ik']))} bytes "
            "for the IPsec SA",
        )
    return "RES equals the HSS's XRES for all three cards"


@scenario("sdes-e2ae", "SDES call A -> B with e2ae indications; SRTP both ways with libsrtp")
def sc_sdes(lab: Lab) -> str:
    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    caps = a.call("capabilities")
    lab.tl.event(a.name, f"REGISTER Security-Client: {caps['e2ae']['security_client']}")
    offer = a.call("sdes.offer", media=["audio"], e2ae=True)
    lines = offer["streams"][0]["lines"]
    assert "a=3ge2ae:requested" in lines, lines
    lab.tl.event(
        a.name,
        f"INVITE SDP offer: a=3ge2ae:requested, {len(lines) - 1} a=crypto lines ({lines[0].split()[1]}, ...)",
    )
    answer = b.call("sdes.answer", offer=[s["lines"] for s in offer["streams"]])
    lab.tl.event(
        b.name, f"200 OK SDP answer: {answer['streams'][0]['lines'][0].split(' inline:')[0]} inline:<key>"
    )
    done = a.call("sdes.answer", session=offer["session"], answer=[s["lines"] for s in answer["streams"]])
    assert done.get("state") == "active", done
    ka = a.call("session.keys", session=offer["session"])
    kb = b.call("session.keys", session=answer["session"])
    n_ab = srtp_roundtrip(stream_keys(ka, "audio", "tx"), stream_keys(kb, "audio", "rx"))
    n_ba = srtp_roundtrip(stream_keys(kb, "audio", "tx"), stream_keys(ka, "audio", "rx"))
    lab.tl.event("media", f"libsrtp: A->B {n_ab}/1000 and B->A {n_ba}/1000 packets unprotected")
    assert n_ab == n_ba == 1000
    a.call("session.close", session=offer["session"])
    b.call("session.close", session=answer["session"])
    return "both agents hold matching SRTP keys; 2000 packets protected and unprotected"


def sdes_call(lab: Lab, caller: Ue, callee: Ue) -> tuple[str, str]:
    """An SDES offer/answer between two agents; returns (caller's session, callee's session)."""
    offer = caller.call("sdes.offer", media=["audio"])
    answer = callee.call("sdes.answer", offer=[s["lines"] for s in offer["streams"]])
    caller.call("sdes.answer", session=offer["session"], answer=[s["lines"] for s in answer["streams"]])
    return offer["session"], answer["session"]


def wait_event(client, name: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = client.next_event()
        if ev.get("event") == name:
            return ev
    raise AssertionError(f"no {name} event")


def tls_psk_handshake(server_keys: dict, client_keys: dict, tls: str = "-tls1_3") -> bool:
    """openssl s_server and s_client on loopback, each with one agent's PSK and identity."""
    if shutil.which("openssl") is None:
        raise RuntimeError("openssl is not installed")
    port = _free_port()
    cipher = ["-cipher", "PSK-AES128-CBC-SHA256"] if tls == "-tls1_2" else []

    def psk(k: dict) -> list[str]:
        return ["-psk", base64.b64decode(k["key"]).hex(), "-psk_identity", k["identity"]]

    server_cmd = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-nocert", tls, *cipher]
    server_cmd += [*psk(server_keys), "-rev", "-naccept", "1"]
    server = subprocess.Popen(
        server_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:  # ACCEPT: listening (a connect probe would use up -naccept 1)
            if line.startswith(b"ACCEPT"):
                break
        client_cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", tls, *cipher]
        client_cmd += [*psk(client_keys), "-quiet"]
        client = subprocess.run(
            client_cmd, input=b"MSRP a786hjs2 SEND\nCLOSE\n", capture_output=True, timeout=20
        )
        return b"DNES 2sjh687a PRSM" in client.stdout
    finally:
        server.kill()
        server.wait()


def mikey_call(lab: Lab, caller: Ue, callee: Ue, media: list[str], **offer_params) -> tuple[dict, dict, dict]:
    offer = caller.call("mikey.offer", responder=callee.impu, media=media, **offer_params)
    answer = callee.call("mikey.answer", transfer_init=offer["key_mgmt"])
    done = caller.call("mikey.complete", session=offer["session"], transfer_resp=answer["key_mgmt"])
    assert done["state"] == "active", done
    return offer, answer, done


@scenario("kms-call", "KMS-protected call A -> B (MIKEY-TICKET): SRTP audio and TLS-PSK for MSRP")
def sc_kms_call(lab: Lab) -> str:
    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    before = dict(lab.net.requests)
    offer, answer, _ = mikey_call(lab, a, b, ["audio", "message"])
    st = a.call("status")["bootstrap"]
    lab.tl.event(
        a.name,
        f"GBA bootstrap with the BSF: B-TID {st.get('btid')}, {st.get('state')}, "
        f"until {st.get('lifetime') or st.get('expires')}",
    )
    lab.tl.event(
        a.name,
        f"REQUEST_INIT -> KMS (Ua digest, B-TID + Ks_NAF): ticket; "
        f"INVITE {offer['key_mgmt'][:40]}... ({len(offer['transfer_init'])} b64 chars)",
    )
    lab.tl.event(
        b.name, f"RESOLVE_INIT -> KMS: caller vouched as {answer['peer']}; 200 OK with TRANSFER_RESP"
    )
    lab.tl.event(
        "lab",
        f"KMS requests: {lab.net.requests['kms'] - before.get('kms', 0)}, "
        f"BSF requests: {lab.net.requests['bsf'] - before.get('bsf', 0)}",
    )
    ka = a.call("session.keys", session=offer["session"])
    kb = b.call("session.keys", session=answer["session"])
    n_ab = srtp_roundtrip(stream_keys(ka, "audio", "tx"), stream_keys(kb, "audio", "rx"), ssrc=0xA)
    n_ba = srtp_roundtrip(stream_keys(kb, "audio", "tx"), stream_keys(ka, "audio", "rx"), ssrc=0xB)
    lab.tl.event("media", f"libsrtp: A->B {n_ab}/1000 and B->A {n_ba}/1000 packets unprotected")
    assert n_ab == n_ba == 1000
    ta, tb = stream_keys(ka, "message", "tx"), stream_keys(kb, "message", "tx")
    assert ta["kind"] == tb["kind"] == "tls-psk"
    ok12 = tls_psk_handshake(tb, ta, "-tls1_2")
    ok13 = tls_psk_handshake(tb, ta, "-tls1_3")
    lab.tl.event(
        "media",
        f"MSRP over TLS-PSK (identity {ta['identity'][:16]}...): openssl s_server(B) <-> "
        f"s_client(A): TLS 1.2 {'ok' if ok12 else 'FAILED'}, TLS 1.3 {'ok' if ok13 else 'FAILED'}",
    )
    assert ok12 and ok13
    a.call("session.close", session=offer["session"])
    b.call("session.close", session=answer["session"])
    return "same SRTP and TLS-PSK keys at both ends, from the KMS's ticket"


@scenario("kms-repeat", "A second call A -> B reuses the ticket: no KMS round trip")
def sc_kms_repeat(lab: Lab) -> str:
    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    before = lab.net.requests["kms"]
    offer, answer, _ = mikey_call(lab, a, b, ["audio"])
    sent = lab.net.requests["kms"] - before
    lab.tl.event(
        a.name,
        f"mikey.offer: reused_ticket={offer['reused_ticket']}; requests to the KMS by A: "
        f"{'0' if offer['reused_ticket'] else 'some'}; by the whole call: {sent}",
    )
    assert offer["reused_ticket"], offer
    ka = a.call("session.keys", session=offer["session"])
    kb = b.call("session.keys", session=answer["session"])
    assert srtp_roundtrip(stream_keys(ka, "audio", "tx"), stream_keys(kb, "audio", "rx"), 100) == 100
    a.call("session.close", session=offer["session"])
    b.call("session.close", session=answer["session"])
    return "the caller sent no KMS request for the repeated call (per-session modifier, new keys)"


@scenario(
    "kms-policy",
    "Recipient policy and forking: C may not resolve B's ticket; a forked call keys B and C apart",
)
def sc_kms_policy(lab: Lab) -> str:
    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    offer = a.call("mikey.offer", responder=b.impu, media=["audio"])
    try:
        c.call("mikey.answer", transfer_init=offer["key_mgmt"])
        raise AssertionError("UE-C resolved a ticket meant for UE-B")
    except AgentError as exc:
        lab.tl.event(c.name, f"resolving B's ticket -> {exc.code}")
        assert exc.code == "kms.not_authorized", exc.code
    a.call("session.close", session=offer["session"])
    fork = a.call("mikey.offer", responder=b.impu, media=["audio"], recipients=[b.impu, c.impu])
    ab = b.call("mikey.answer", transfer_init=fork["key_mgmt"])
    ac = c.call("mikey.answer", transfer_init=fork["key_mgmt"])
    keys_b = b.call("session.keys", session=ab["session"])
    kb = stream_keys(keys_b, "audio", "tx")
    kc = stream_keys(c.call("session.keys", session=ac["session"]), "audio", "tx")
    differ = kb["master_key"] != kc["master_key"]
    lab.tl.event("lab", f"INVITE forked to B and C: both resolve; their keys differ: {differ}")
    assert differ
    a.call("mikey.complete", session=fork["session"], transfer_resp=ab["key_mgmt"])
    ka = a.call("session.keys", session=fork["session"])
    assert srtp_roundtrip(stream_keys(ka, "audio", "tx"), stream_keys(keys_b, "audio", "rx"), 100) == 100
    lab.tl.event(a.name, "B answered first: A's keys match B's (and not C's)")
    for ue, sid in ((a, fork["session"]), (b, ab["session"]), (c, ac["session"])):
        ue.call("session.close", session=sid)
    return "a UE outside the recipients is refused; forked endpoints get different keys"


@scenario("deferred", "Deferred delivery: B offline; A keys the media at offer time, B resolves later")
def sc_deferred(lab: Lab) -> str:
    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    off = a.call("mikey.offer", responder=b.impu, media=["audio"], deferred=True, validity=7200)
    tx = stream_keys(a.call("session.keys", session=off["session"]), "audio", "tx")
    lab.tl.event(a.name, f"one-way ticket (no TRANSFER_RESP): keys at once, valid until {off['expires']}")
    try:
        c.call("mikey.resolve_stored", transfer_init=off["transfer_init"])
        raise AssertionError("UE-C resolved a stored ticket meant for UE-B")
    except AgentError as exc:
        lab.tl.event(c.name, f"a mailbox-like party resolving it -> {exc.code}")
        assert exc.code == "kms.not_authorized", exc.code
    got = b.call("mikey.resolve_stored", transfer_init=off["transfer_init"])
    rx = stream_keys(b.call("session.keys", session=got["session"]), "audio", "rx")
    n = srtp_roundtrip(tx, rx)
    lab.tl.event(b.name, f"back online: stored ticket resolved (from {got['peer']}); libsrtp {n}/1000")
    assert n == 1000
    try:
        b.call("mikey.resolve_stored", transfer_init=off["transfer_init"])
        raise AssertionError("the stored TRANSFER_INIT was accepted twice")
    except AgentError as exc:
        lab.tl.event(b.name, f"the same stored TRANSFER_INIT again -> {exc.code}")
        assert exc.code == "mikey.replay", exc.code
    a.call("session.close", session=off["session"])
    b.call("session.close", session=got["session"])
    return "sender keyed at offer time; only the recipient resolves the stored ticket, once"


@scenario("message", "IMS messaging: a pager-mode MESSAGE body for B and C, end to end")
def sc_message(lab: Lab) -> str:
    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    text = "See you at the north gate at 10:00"
    sealed = a.call(
        "message.protect", recipients=[b.impu, c.impu], body=b64(text.encode()), content_type="text/plain"
    )
    lab.tl.event(
        a.name, f"MESSAGE to B and C: application/mikey + {len(sealed['body'])} b64 chars, {sealed['mode']}"
    )
    for ue in (b, c):
        got = ue.call("message.unprotect", transfer_init=sealed["transfer_init"], body=sealed["body"])
        plain = base64.b64decode(got["body"]).decode()
        lab.tl.event(ue.name, f"from {got['sender']}: {plain!r}")
        assert plain == text
    only_b = a.call("message.protect", recipients=[b.impu], body=b64(b"for B only"))
    try:
        c.call("message.unprotect", transfer_init=only_b["transfer_init"], body=only_b["body"])
        raise AssertionError("UE-C read a message for B only")
    except AgentError as exc:
        lab.tl.event(c.name, f"a message for B only -> {exc.code}")
        assert exc.code == "kms.not_authorized", exc.code
    return "both recipients read the body; a third party is refused by the KMS"


CONFERENCE = "sip:conf-1@ims.mnc001.mcc001.3gppnetwork.org"


def focus_post(lab: Lab, action: str, body: bytes | dict) -> dict:
    """The lab focus's HTTP front (the stand-in for the MRFC's SIP signalling)."""
    import json
    import urllib.parse
    import urllib.request

    url = f"{lab.net.focus_url}/conference/{urllib.parse.quote(CONFERENCE, safe='')}/{action}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=30) as r:
        return json.loads(r.read())


@scenario("conference", "Conference of three via the lab focus: A, B dial in, C dialled out; C leaves")
def sc_conference(lab: Lab) -> str:
    import pylibsrtp

    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    ues = {ue.impu: ue for ue in (a, b, c)}
    sid: dict[str, str] = {}

    def updates(ups: dict[str, str]) -> None:
        for uri, raw in ups.items():
            r = ues[uri].call("conference.update", session=sid[uri], key_mgmt=raw)
            lab.tl.event(ues[uri].name, f"re-key from the focus: generation {r['generation']}")

    for ue in (a, b):
        off = ue.call("mikey.offer", responder=CONFERENCE, media=["audio", "bfcp"], conference=True)
        got = focus_post(lab, "dial-in", base64.b64decode(off["transfer_init"]))
        done = ue.call("mikey.complete", session=off["session"], transfer_resp=got["transfer_resp"])
        sid[ue.impu] = off["session"]
        lab.tl.event(ue.name, f"dialled in: group keys of generation {done['conference']['generation']}")
        updates(got["updates"])
    ti = focus_post(lab, "dial-out", {"member": c.impu, "media": ["audio", "bfcp"]})["transfer_init"]
    ans = c.call("mikey.answer", transfer_init=ti, media=["audio", "bfcp"])
    sid[c.impu] = ans["session"]
    lab.tl.event(c.name, f"dialled out by {ans['peer']}: generation {ans['conference']['generation']}")
    updates(focus_post(lab, "answered", {"member": c.impu, "transfer_resp": ans["transfer_resp"]})["updates"])

    def tx(ue: Ue) -> dict:
        return stream_keys(ue.call("session.keys", session=sid[ue.impu]), "audio", "tx")

    def sess(k: dict, inbound: bool) -> pylibsrtp.Session:
        key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
        kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind))

    def send(ue: Ue, k: dict, seq: int) -> dict[str, bytes]:
        rtp = bytes([0x80, 0, 0, seq, 0, 0, 0, seq]) + k["ssrc"].to_bytes(4, "big") + b"voice" * 32
        out = focus_post(lab, "relay", {"member": ue.impu, "packet": b64(sess(k, False).protect(rtp))})
        return {uri: base64.b64decode(p) for uri, p in out["packets"].items()}

    keys = {ue.impu: tx(ue) for ue in (a, b, c)}
    assert len({k["ssrc"] for k in keys.values()}) == 3, "SSRCs must be unique"
    heard = 0
    for seq, ue in enumerate((a, b, c), 1):
        for uri, pkt in send(ue, keys[ue.impu], seq).items():
            heard += sess(keys[uri], True).unprotect(pkt)[12:] == b"voice" * 32
    lab.tl.event("focus", f"MRFP relayed 6 packets; {heard}/6 decrypted by the other members")
    assert heard == 6
    c.call("session.close", session=sid[c.impu])
    updates(focus_post(lab, "leave", {"member": c.impu})["updates"])
    pkt = send(a, tx(a), 9)[b.impu]
    assert sess(tx(b), True).unprotect(pkt)[12:] == b"voice" * 32
    try:
        sess(keys[c.impu], True).unprotect(pkt)
        raise AssertionError("UE-C decrypted the generation made after it left")
    except pylibsrtp.Error:
        lab.tl.event(c.name, "left: its key does not open the new generation (SRTP auth fails)")
    for ue in (a, b):
        ue.call("session.close", session=sid[ue.impu])
    return "all three hear each other under one group key; the leaver is re-keyed out"


@scenario("srvcc", "SRVCC mid-call (audio + MSRP): voice moves to CS, MSRP keeps its keys")
def sc_srvcc(lab: Lab) -> str:
    from ue_agent.api.client import Client

    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    with Client(a.socket, timeout=10) as events:
        events.request("subscribe", events=["handover", "security.warning"])
        offer, answer, _ = mikey_call(lab, a, b, ["audio", "message"])
        sa, sb = offer["session"], answer["session"]
        lab.tl.event(a.name, f"call {sa} active on PS: audio (SRTP) + MSRP (TLS-PSK), e2e-kms")
        assert lab.modem.srvcc(0), "the agent did not enable +CIREP reporting on the modem"
        ev = wait_event(events, "handover")
        lab.tl.event("modem", f"+CIREPH: 0 -> handover event {ev.get('phase') or ev}")
        assert lab.modem.srvcc(2)
        wait_event(events, "handover")
        keys = a.call("session.keys", session=sa)
        lab.tl.event("modem", "+CIREPH: 2 (cancelled): the call stays on PS, keys resume (index continues)")
        assert len(keys["streams"]) == 2, keys
        lab.modem.srvcc(0)
        wait_event(events, "handover")
        lab.modem.srvcc(1)
        ev = wait_event(events, "handover")
        w = wait_event(events, "security.warning")
        lab.tl.event("modem", f"+CIREPH: 0, 1 (success): event phase {ev['phase']}")
        lab.tl.event(
            a.name,
            f"security.warning {w['kind']}: {', '.join(w['media'])} now {w['protection']['mechanism']} "
            f"(was {w['before']})",
        )
        assert w["kind"] == "protection_lost" and w["media"] == ["audio"], w
        keys = a.call("session.keys", session=sa)
        kb = b.call("session.keys", session=sb)
        left = [st["media"] for st in keys["streams"]]
        ok = tls_psk_handshake(stream_keys(kb, "message", "tx"), stream_keys(keys, "message", "tx"))
        lab.tl.event(a.name, f"keys left: {left}; MSRP over TLS-PSK after SRVCC: {'ok' if ok else 'FAILED'}")
        assert left == ["message"] and ok
        st = a.call("status")["handover"]
        lab.tl.event(a.name, f"status: handover phase {st.get('phase')}")
        a.call("session.close", session=sa)
        b.call("session.close", session=sb)
        offer2, answer2, _ = mikey_call(lab, a, b, ["audio"])
        lab.tl.event(a.name, f"back on PS: the call is re-keyed ({offer2['session']}, fresh TEKs)")
        a.call("session.close", session=offer2["session"])
        b.call("session.close", session=answer2["session"])
    return "voice keys released with protection_lost; MSRP kept working; the return re-keys"


@scenario("who-answered", "Who answered: A calls B with recipients [B, C]; C answers")
def sc_who_answered(lab: Lab) -> str:
    from ue_agent.api.client import Client

    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    with Client(a.socket, timeout=10) as events:
        events.request("subscribe", events=["security.warning"])
        offer = a.call("mikey.offer", responder=b.impu, media=["audio"], recipients=[b.impu, c.impu])
        answer = c.call("mikey.answer", transfer_init=offer["key_mgmt"])
        done = a.call("mikey.complete", session=offer["session"], transfer_resp=answer["key_mgmt"])
        p = done["protection"]
        lab.tl.event(
            a.name,
            f"mikey.complete: answered by {done['peer']} (KMS-vouched: {p['peer_authenticated']}), "
            f"called {p['requested']}, intended: {p['intended']}",
        )
        w = wait_event(events, "security.warning")
        lab.tl.event(a.name, f"security.warning {w['kind']} ({w['action']}): {w['message']}")
        assert done["peer"] == c.impu and w["kind"] == "responder_mismatch"
        a.call("session.close", session=offer["session"])
        c.call("session.close", session=answer["session"])
    return "the caller learns C answered, and its policy warns that C is not the party called"


@scenario("cdiv", "Diversion: B forwards to C; the CDIV AS diverts A's call; the KMS asks the AS")
def sc_cdiv(lab: Lab) -> str:
    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    cdiv = lab.net.cdiv_as
    cdiv.forward(b.impu, c.impu)
    offer = a.call("mikey.offer", responder=b.impu, media=["audio"])
    target = cdiv.divert(b.impu, offer["key_mgmt"])
    lab.tl.event("lab", f"CDIV AS {cdiv.identity}: INVITE for {b.impu} diverted to {target}")
    answer = c.call("mikey.answer", transfer_init=offer["key_mgmt"], cdiv_as=cdiv.identity)
    q = cdiv.questions[-1]
    lab.tl.event(
        "lab", f"KMS asked the CDIV AS: is {q.target} the diverted-to user of {q.served}? {q.answer}"
    )
    lab.tl.event(c.name, f"mikey.answer: keys for A's call to {answer['diverted_from']}")
    done = a.call("mikey.complete", session=offer["session"], transfer_resp=answer["key_mgmt"])
    p = done["protection"]
    lab.tl.event(
        a.name, f"mikey.complete: answered by {done['peer']}, diverted from {p.get('diverted_from')}"
    )
    assert q.answer is True and done["peer"] == c.impu and p.get("diverted_from") == b.impu
    cdiv.forward(b.impu, None)
    a.call("session.close", session=offer["session"])
    c.call("session.close", session=answer["session"])
    return "C got keys only after the CDIV AS confirmed the diversion; A sees who answered and why"


@scenario("anonymous", "An anonymous call: A hides its identity from B; the KMS vouches for A")
def sc_anonymous(lab: Lab) -> str:
    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    offer, answer, done = mikey_call(lab, a, b, ["audio"], anonymous=True)
    lab.tl.event(
        b.name,
        f"mikey.answer: peer {answer['peer']}, checked by the KMS: {answer['kms_vouched']}",
    )
    assert answer["peer"] == "anonymous" and answer["kms_vouched"] is True
    a.call("session.close", session=offer["session"])
    b.call("session.close", session=answer["session"])
    return "B's softphone sees an anonymous caller the KMS authenticated; A's identity never reached B"


@scenario("downgraded", "A downgraded call: A's policy asks for e2e audio, the answer is SDES")
def sc_downgraded(lab: Lab) -> str:
    from ue_agent.api.client import Client

    a, b = lab.ues["UE-A"], lab.ues["UE-B"]
    with Client(a.socket, timeout=10) as events:
        events.request("subscribe", events=["security.warning"])
        sa, sb = sdes_call(lab, a, b)
        p = a.call("session.keys", session=sa)["protection"]
        w = wait_event(events, "security.warning")
        lab.tl.event(a.name, f"protection: {p['scope']} ({p['mechanism']}), peer {p['peer']}")
        lab.tl.event(a.name, f"security.warning {w['kind']} ({w['action']}): {w['message']}")
        assert w["kind"] == "downgraded" and p["scope"] == "e2e-sdes"
        a.call("session.close", session=sa)
        b.call("session.close", session=sb)
    return "an SDES answer under a policy asking for e2e is reported and warned"


@scenario("early-media", "Early media: the INVITE forks to B and C, both send 183 with SDP")
def sc_early(lab: Lab) -> str:
    a, b, c = lab.ues["UE-A"], lab.ues["UE-B"], lab.ues["UE-C"]
    offer = a.call("sdes.offer", media=["audio"], suites=["AES_CM_128_HMAC_SHA1_80"])
    sid, lines = offer["session"], [st["lines"] for st in offer["streams"]]
    ans = {ue.name: ue.call("sdes.answer", offer=lines) for ue in (b, c)}
    for ue in (b, c):
        a.call(
            "sdes.answer",
            session=sid,
            answer=[ans[ue.name]["streams"][0]["lines"]],
            early=True,
            dialog=ue.name,
        )
        ka = a.call("session.keys", session=sid, dialog=ue.name)
        ku = ue.call("session.keys", session=ans[ue.name]["session"])
        n = srtp_roundtrip(stream_keys(ku, "audio", "tx"), stream_keys(ka, "audio", "rx"), 100)
        lab.tl.event(ue.name, f"183 (early dialog {ue.name}): ringback {n}/100 packets decrypted at A")
        assert n == 100
    done = a.call("sdes.answer", session=sid, answer=[ans["UE-B"]["streams"][0]["lines"]])
    lab.tl.event(a.name, f"200 OK from B: early keys {done['early']}")
    assert done["early"] == {"confirmed": "UE-B", "released": ["UE-C"]}
    a.call("session.close", session=sid)
    for ue in (b, c):
        ue.call("session.close", session=ans[ue.name]["session"])
    return "both early dialogs keyed; B's keys confirmed by the 200 OK, C's released"


@scenario("e2ae", "e2ae for real: REGISTER through the lab P-CSCF, a call through the lab IMS-AGW")
def sc_e2ae(lab: Lab) -> str:
    from ue_agent.lab.e2ae import LabImsAgw, LabPcscf

    a = lab.ues["UE-A"]
    pcscf, agw = LabPcscf(), LabImsAgw()
    try:
        caps = a.call("capabilities")["e2ae"]["security_client"]
        server = pcscf.security_server
        first = pcscf.handle(
            f"REGISTER sip:ims SIP/2.0\r\nContact: <{a.impu}>\r\nSecurity-Client: {caps}\r\n\r\n"
        )
        m = a.call("ims.mediasec", security_server=server)
        verify = f"Security-Client: {caps}\r\nSecurity-Verify: {m['security_verify']}"
        second = pcscf.handle(f"REGISTER sip:ims SIP/2.0\r\nContact: <{a.impu}>\r\n{verify}\r\n\r\n")
        status = [r.split("\r\n")[0][8:] for r in (first, second)]
        lab.tl.event(a.name, f"REGISTER Security-Client: {caps} -> {status[0]}, Security-Server: {server}")
        lab.tl.event(a.name, f"ims.mediasec: both support {m['mechanisms']}; Security-Verify -> {status[1]}")
        assert second.startswith("SIP/2.0 200") and m["e2ae"]
        offer = a.call("sdes.offer", media=["audio"], e2ae=True)
        answer = agw.answer([str(x) for x in offer["streams"][0]["lines"]])
        done = a.call("sdes.answer", session=offer["session"], answer=[answer])
        lab.tl.event(
            a.name, f"IMS-AGW answered with a=3ge2ae:applied: protection {done['protection']['scope']}"
        )
        assert done["protection"]["scope"] == "e2ae"
        keys = stream_keys(a.call("session.keys", session=offer["session"]), "audio", "tx")
        rx_keys = stream_keys(a.call("session.keys", session=offer["session"]), "audio", "rx")
        n = _through_agw(agw, keys, rx_keys, 1000)
        lab.tl.event("media", f"UE-A <-SRTP-> IMS-AGW <-RTP-> far end: {n[0]}/1000 up, {n[1]}/1000 down")
        assert n == (1000, 1000)
        a.call("session.close", session=offer["session"])
    finally:
        agw.close()
    return "Security-Verify accepted; the IMS-AGW terminates the agent's SRTP keys (scope e2ae)"


def _through_agw(agw, tx_keys: dict, rx_keys: dict, count: int) -> tuple[int, int]:
    import pylibsrtp

    prof = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80

    def sess(k: dict, kind: int) -> pylibsrtp.Session:
        key = base64.b64decode(k["master_key"]) + base64.b64decode(k["master_salt"])
        return pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=prof))

    tx, rx = (
        sess(tx_keys, pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
        sess(rx_keys, pylibsrtp.Policy.SSRC_ANY_INBOUND),
    )
    ue, far = (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
    )
    up = down = 0
    try:
        for s in (ue, far):
            s.bind(("127.0.0.1", 0))
            s.settimeout(5)
        agw.start(far.getsockname(), ue.getsockname())
        for i in range(count):
            rtp = bytes([0x80, 0]) + i.to_bytes(2, "big") + b"\0\0\0\1\0\0\0\x0a" + b"up" * 20
            ue.sendto(tx.protect(rtp), ("127.0.0.1", agw.access_port))
            up += far.recvfrom(2048)[0] == rtp
            back = bytes([0x80, 0]) + i.to_bytes(2, "big") + b"\0\0\0\1\0\0\0\x0b" + b"dn" * 20
            far.sendto(back, ("127.0.0.1", agw.core_port))
            down += rx.unprotect(ue.recvfrom(2048)[0]) == back
    finally:
        ue.close()
        far.close()
    return up, down


# -- the command -------------------------------------------------------------------------


def run(
    workdir: Path,
    only: list[str] | None,
    color: bool,
    on_reply: Callable[[str, str, dict], None] | None = None,
    pcsc: bool = True,
    pcscd=None,
) -> int:
    """Run the scenarios in ``workdir``; 0 when all passed. ``on_reply(ue, op, reply)`` sees
    every reply the agents give (the tests collect the keys handed out with it). ``pcsc=False``
    keeps UE-B's card in process; ``pcscd`` hands in a pcscd the caller already holds."""
    tl = Timeline(color)
    print(f"ue-agent demo: the embedded lab on loopback (files in {workdir})")
    for n in ("alice", "bob", "carol"):
        shutil.copy(SUBSCRIBERS / f"{n}.toml", workdir / f"{n}.toml")
    from ue_agent.subscriber import load_subscriber

    lab = Lab(workdir, tl)
    results: list[tuple[str, bool, str]] = []
    try:
        tl.section("Lab: network, modem, reader, agents")
        lab.start_network()
        subs = {n: load_subscriber(workdir / f"{n}.toml") for n in ("alice", "bob", "carol")}
        modem = lab.start_modem(workdir / "alice.toml")
        reader = lab.start_reader(workdir / "bob.toml", pcscd) if pcsc else None
        plan = [
            (
                "UE-A",
                "alice",
                {"transport": "at", "port": modem, "profile": "quectel-ec25"},
                f"AT+CSIM {modem}",
                modem,
            ),
            (
                "UE-B",
                "bob",
                {"transport": "pcsc", "reader": reader}
                if reader
                else {"transport": "lab", "subscriber": str(workdir / "bob.toml")},
                f"PC/SC '{reader}'" if reader else "in-process soft UICC",
                None,
            ),
            (
                "UE-C",
                "carol",
                {"transport": "lab", "subscriber": str(workdir / "carol.toml")},
                "in-process soft UICC (USIM only)",
                None,
            ),
        ]
        for name, sub, card, path, modem_port in plan:
            s = subs[sub]
            ue = Ue(name, workdir / f"{sub}.toml", s.impu[0], s.impi, path, workdir / name, on_reply=on_reply)
            lab.ues[name] = ue
            lab.start_daemon(ue, card, modem_port=modem_port)
        for name, title, fn in SCENARIOS:
            if only and name not in only:
                continue
            tl.section(title)
            try:
                summary = fn(lab)
                results.append((name, True, summary))
                tl.verdict(True, summary)
            except (AssertionError, AgentError, KeyError, RuntimeError, OSError) as exc:
                results.append((name, False, f"{type(exc).__name__}: {exc}"))
                tl.verdict(False, f"{type(exc).__name__}: {exc}")
                if os.environ.get("UE_AGENT_DEMO_TRACE"):
                    traceback.print_exc()
    except Exception as exc:  # the lab itself did not come up
        tl.verdict(False, f"lab: {type(exc).__name__}: {exc}")
        results.append(("lab", False, str(exc)))
    finally:
        lab.close()
    passed = sum(ok for _, ok, _ in results)
    print(
        f"\n{passed}/{len(results)} scenarios passed"
        + ("" if passed == len(results) else ": " + ", ".join(n for n, ok, _ in results if not ok))
    )
    return 0 if results and passed == len(results) else 1


@contextlib.contextmanager
def _workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        p = Path(keep)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    p = Path(tempfile.mkdtemp(prefix="ue-agent-demo-", dir="/tmp"))
    try:
        yield p
    finally:
        shutil.rmtree(p, ignore_errors=True)


def main(args: argparse.Namespace) -> int:
    with _workdir(args.keep_dir) as d:
        return run(d, args.only, color=sys.stdout.isatty(), pcsc=not args.no_pcsc)
