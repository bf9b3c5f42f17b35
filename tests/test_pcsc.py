"""The card layer over the real PC/SC stack: Card -> PcscTransport -> pyscard -> pcscd ->
vpcd -> VpcdCard -> SoftUicc, with TS 35.208 test set 1 (K, OP, RAND, SQN, AMF) byte for byte."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.lab import SET1, write_subscriber
from tests.fixtures.pcsc import wait_reader
from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure
from ue_agent.errors import CardError, ConfigError, TransportError

# TS 35.208 4.3.1, test set 1
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN = bytes.fromhex("ff9bb4d0b607")
AK = bytes.fromhex("aa689c648370")
AMF = bytes.fromhex("b9b9")
MAC_A = bytes.fromhex("4a9ffac354dfafb3")
RES = bytes.fromhex("a54211d5e3ba50bf")
CK = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
IK = bytes.fromhex("f769bcd751044604127672711c6d3441")
AK_STAR = bytes.fromhex("451e8beca43b")
LAB_UICC = [sys.executable, "-m", "ue_agent", "lab", "uicc"]
AUTN = bytes(a ^ b for a, b in zip(SQN, AK, strict=True)) + AMF + MAC_A


# -- no pcscd needed: the ATR and APDU checks ---------------------------------------------


def test_autn_is_test_set_1():
    assert AUTN.hex() == "55f328b43577b9b94a9ffac354dfafb3"  # TS 35.208 4.3.1


def test_protocols_from_atr():
    from ue_agent.drivers.pcsc import protocols_from_atr
    from ue_agent.lab.uicc import build_atr

    assert protocols_from_atr(build_atr(t0=True)) == [0]
    assert protocols_from_atr(build_atr(t0=False)) == [1]
    assert protocols_from_atr(bytes.fromhex("3b02 1422")) == [0]  # no TD1: T=0 only
    assert protocols_from_atr(bytes.fromhex("3b 80 81 01 00")) == [1]
    assert protocols_from_atr(bytes.fromhex("3b 80 80 01 00")) == [0, 1]  # the first is the default
    with pytest.raises(CardError) as exc:
        protocols_from_atr(bytes.fromhex("3b 80"))  # TD1 announced, missing
    assert exc.value.code == "card.bad_atr"
    with pytest.raises(CardError):
        protocols_from_atr(b"\x3b")


def test_bad_apdu_is_refused_before_pcsc():
    from ue_agent.drivers.pcsc import PcscTransport

    with PcscTransport("no such reader") as t:
        for bad in (b"", b"\x00\xa4\x00", "00a40000"):
            with pytest.raises(CardError) as exc:
                t.transmit(bad)  # type: ignore[arg-type]
            assert exc.value.code == "card.bad_apdu"
    with pytest.raises(TransportError) as closed:
        t.transmit(bytes.fromhex("00a40004023f00"))
    assert closed.value.code == "card.closed"
    t.close()  # idempotent


def test_pyscard_is_imported_lazily():
    code = (
        "import sys, ue_agent.drivers.pcsc, ue_agent.lab.vpcd, ue_agent.card.session;"
        "assert 'smartcard' not in sys.modules, 'pyscard imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- through pcscd ------------------------------------------------------------------------


@pytest.fixture
def card(vpcd_card):
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    c = Card(PcscTransport(reader, wait_s=10))
    yield c
    c.close()


@pytest.mark.pcsc
def test_transport_names_reader_and_protocol(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    with PcscTransport("pcd 00 00") as t:  # substring, case-insensitive
        t.connect()
        assert t.name == f"pcsc:{reader}"
        assert t.protocol == "T=0"
        assert t.atr == server.uicc.atr
        # SELECT MF on T=0 answers 61xx (the card layer fetches the FCP)
        assert t.transmit(bytes.fromhex("00a40004023f00"))[0] in (0x61, 0x90)


@pytest.mark.pcsc
def test_identities_over_pcsc(card, vpcd_card):
    server, _ = vpcd_card
    sub = server.uicc.subscriber
    ids = card.identities()
    assert ids.application == "isim"
    assert ids.impi == sub.impi
    assert ids.impus == sub.impu
    assert ids.domain == sub.domain
    assert ids.iccid == sub.iccid
    assert ids.pcscf == sub.pcscf
    assert server.apdus > 0


@pytest.mark.pcsc
def test_isim_on_a_logical_channel_over_pcsc(vpcd_card):
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport

    card = Card(PcscTransport(vpcd_card[1], use_logical_channel=True))
    try:
        assert card.identities().application == "isim"
        out = card.authenticate(RAND, AUTN)
        assert isinstance(out, AkaSuccess) and out.res == RES
    finally:
        card.close()


@pytest.mark.pcsc
def test_authenticate_success_test_set_1(card, vpcd_card):
    server, _ = vpcd_card
    out = card.authenticate(RAND, AUTN)
    assert isinstance(out, AkaSuccess)
    assert out.res == RES
    assert out.ck == CK
    assert out.ik == IK
    assert server.uicc.highest_sqn == int.from_bytes(SQN, "big")
    # keys never print
    text = repr(out) + str(out.res) + repr(card)
    for key in (RES, CK, IK):
        assert key.hex() not in text.lower()
    out.zeroize()


@pytest.mark.pcsc
def test_no_keys_in_logs_or_errors(card, vpcd_card, caplog):
    server, _ = vpcd_card
    caplog.set_level(logging.DEBUG)
    out = card.authenticate(RAND, AUTN)
    assert isinstance(out, AkaSuccess)
    server.remove_on_apdu(lambda apdu: apdu[1] == 0x88)
    with pytest.raises(TransportError) as exc:
        card.authenticate(RAND, AUTN)
    text = (caplog.text + str(exc.value) + repr(exc.value.to_dict())).lower()
    for key in (RES, CK, IK, bytes.fromhex(SET1["k"]), bytes.fromhex(SET1["opc"])):
        assert key.hex() not in text


@pytest.mark.pcsc
def test_authenticate_mac_failure(card, vpcd_card):
    server, _ = vpcd_card
    bad = AUTN[:-1] + bytes([AUTN[-1] ^ 0x01])
    assert isinstance(card.authenticate(RAND, bad), AkaMacFailure)
    assert server.uicc.highest_sqn == 32  # nothing accepted


@pytest.mark.pcsc
def test_authenticate_sync_failure_gives_auts(card, vpcd_card):
    from ue_agent.crypto.milenage import Milenage

    server, _ = vpcd_card
    m = Milenage(bytes.fromhex(SET1["k"]), bytes.fromhex(SET1["opc"]))
    stale = (32).to_bytes(6, "big")  # the card has used SQN 32 already
    out = card.authenticate(RAND, m.generate_autn(RAND, stale, AMF))
    assert isinstance(out, AkaSyncFailure)
    assert len(out.auts) == 14
    # AUTS = SQN_MS xor AK* || MAC-S: the HSS gets SQN_MS = 32 back
    assert bytes(a ^ b for a, b in zip(out.auts[:6], AK_STAR, strict=True)) == stale
    assert m.resync_sqn(RAND, out.auts) == stale
    # a fresh SQN above it is accepted afterwards
    assert isinstance(card.authenticate(RAND, AUTN), AkaSuccess)


@pytest.mark.pcsc
def test_t1_card_on_the_second_reader(pcscd, tmp_path):
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.lab.vpcd import VpcdCard
    from ue_agent.subscriber import load_subscriber

    pcscd.start()
    reader = pcscd.readers[1]
    uicc = SoftUicc(load_subscriber(write_subscriber(tmp_path / "b.toml", name="bob")), t0=False)
    with VpcdCard(uicc, "127.0.0.1", pcscd.port + 1):
        wait_reader(reader, True)
        # the pattern matches both readers: the one holding a card wins
        card = Card(PcscTransport("virtual pcd"))
        try:
            assert card.identities().impus[0].startswith("sip:bob@")
            assert card.transport.name == f"pcsc:{reader}"
            assert card.transport.protocol == "T=1"
            assert isinstance(card.authenticate(RAND, AUTN), AkaSuccess)
        finally:
            card.close()
    wait_reader(reader, False)


@pytest.mark.pcsc
def test_cli_lab_uicc_through_pcscd(pcscd, tmp_path):
    """`ue-agent lab uicc` as its own process, reached like a card in a reader."""
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport

    pcscd.start()
    reader = pcscd.readers[1]
    sub = write_subscriber(tmp_path / "carol.toml", name="carol", imsi="001010000000003")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ue_agent",
            "lab",
            "uicc",
            "--subscriber",
            str(sub),
            "--vpcd",
            f"127.0.0.1:{pcscd.port + 1}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        wait_reader(reader, True, timeout=20)
        card = Card(PcscTransport(reader))
        try:
            ids = card.identities()
            assert ids.impi == "001010000000003@ims.mnc001.mcc001.3gppnetwork.org"
            out = card.authenticate(RAND, AUTN)
            assert isinstance(out, AkaSuccess) and out.res == RES
        finally:
            card.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"card connected to vpcd 127.0.0.1:{pcscd.port + 1}" in err
    assert "card disconnected" in err
    assert RES.hex() not in err.lower()
    wait_reader(reader, False)


def test_cli_lab_uicc_bad_vpcd_address(subscriber_file):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ue_agent",
            "lab",
            "uicc",
            "--subscriber",
            str(subscriber_file),
            "--vpcd",
            "host:99999",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "config.invalid" in proc.stderr and "port" in proc.stderr


def test_parse_hostport():
    from ue_agent.lab.vpcd import parse_hostport

    assert parse_hostport("127.0.0.1:35963") == ("127.0.0.1", 35963)
    assert parse_hostport("localhost") == ("localhost", 35963)
    assert parse_hostport("[::1]:4000") == ("::1", 4000)
    for bad in ("", ":35963", "h:0", "h:x", "[::1", "[::1]4000"):
        with pytest.raises(ConfigError) as exc:
            parse_hostport(bad)
        assert exc.value.code == "config.invalid"


# -- the vpcd wire protocol, against a stand-in for pcscd's vpcd driver ------------------


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def _read_frame(conn: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf

    return exact(int.from_bytes(exact(2), "big"))


@pytest.fixture
def fake_vpcd():
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    yield srv
    srv.close()


def _soft_uicc(tmp_path: Path):
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    return SoftUicc(load_subscriber(write_subscriber(tmp_path / "a.toml")))


def test_vpcd_framing_and_reconnect(fake_vpcd, tmp_path):
    from ue_agent.lab.vpcd import VpcdCard

    uicc = _soft_uicc(tmp_path)
    with VpcdCard(uicc, "127.0.0.1", fake_vpcd.getsockname()[1], min_out_s=0.0) as server:
        conn, _ = fake_vpcd.accept()
        conn.settimeout(10)
        conn.sendall(_frame(b"\x04"))  # GET ATR
        assert _read_frame(conn) == uicc.atr
        conn.sendall(_frame(b"\x01"))  # power on: no answer
        conn.sendall(_frame(bytes.fromhex("00a40004023f00")))
        answer = _read_frame(conn)
        assert answer[0] == 0x61 and len(answer) == 2  # T=0: the FCP waits for GET RESPONSE
        conn.sendall(_frame(bytes([0x00, 0xC0, 0x00, 0x00, answer[1]])))
        fcp = _read_frame(conn)
        assert fcp[0] == 0x62 and fcp[-2:] == b"\x90\x00"
        assert server.apdus == 2 and server.connected.is_set()
        conn.close()  # pcscd went away: the card comes back by itself
        conn2, _ = fake_vpcd.accept()
        conn2.settimeout(10)
        conn2.sendall(_frame(b"\x04"))
        assert _read_frame(conn2) == uicc.atr
        assert server.connections == 2
        conn2.close()


def test_vpcd_reinserts_when_never_powered_on(fake_vpcd, tmp_path):
    """pcscd that only polls the ATR and never powers the card missed the insertion."""
    from ue_agent.lab.vpcd import VpcdCard

    with VpcdCard(_soft_uicc(tmp_path), "127.0.0.1", fake_vpcd.getsockname()[1], min_out_s=0.0, hello_s=0.3):
        conn, _ = fake_vpcd.accept()
        conn.settimeout(10)
        conn.sendall(_frame(b"\x04"))
        _read_frame(conn)
        with pytest.raises(EOFError):
            _read_frame(conn)  # the card leaves ...
        conn.close()
        again, _ = fake_vpcd.accept()  # ... and comes back
        again.close()


def test_vpcd_stops_while_pcscd_is_down(tmp_path):
    from ue_agent.lab.vpcd import VpcdCard

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = VpcdCard(_soft_uicc(tmp_path), "127.0.0.1", port, retry_s=0.05).start()
    server.stop()
    assert not server.connected.is_set()
    assert not server.running
