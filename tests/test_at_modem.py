"""The AT modem path end to end: pty modem simulator (soft UICC behind it) <- pyserial AtPort <- Card.

Every test opens the simulator's pty by path with pyserial, as the agent opens /dev/ttyUSB2.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.lab import SET1
from tests.fixtures.modem import AT_PROFILES

pytest.importorskip("serial", reason="pyserial is not installed")

from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure  # noqa: E402
from ue_agent.card.session import Card  # noqa: E402
from ue_agent.crypto.milenage import Milenage  # noqa: E402
from ue_agent.drivers.at_modem import (  # noqa: E402
    AtPort,
    CglaTransport,
    CsimTransport,
    enable_ims_reporting,
    open_modem_transport,
    redact,
)
from ue_agent.profiles import get_profile  # noqa: E402

# TS 35.208 4.3.1 (test set 1)
RAND1 = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN1 = bytes.fromhex("ff9bb4d0b607")
AMF1 = bytes.fromhex("b9b9")
RES1 = bytes.fromhex("a54211d5e3ba50bf")
CK1 = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
IK1 = bytes.fromhex("f769bcd751044604127672711c6d3441")
MILENAGE = Milenage(bytes.fromhex(SET1["k"]), bytes.fromhex(SET1["opc"]))
AUTN1 = MILENAGE.generate_autn(RAND1, SQN1, AMF1)
ISIM_PREFIX = "a0000000871004"


def _raw(path: Path, command: str, timeout: float = 5.0) -> str:
    """What the modem writes for ``command``, read with bare pyserial (no driver)."""
    import serial

    with serial.Serial(str(path), 115200, timeout=0.1) as ser:
        ser.reset_input_buffer()
        ser.write(command.encode() + b"\r")
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out += ser.read(4096)
            text = out.decode(errors="replace")
            if text.rstrip().endswith(("OK", "ERROR")) or "+CME ERROR" in text:
                return text
        return out.decode(errors="replace")


@pytest.mark.parametrize("profile", AT_PROFILES)
def test_card_identities_and_aka_over_each_profile(modem_factory, profile):
    """Card over CsimTransport (and CglaTransport where the profile says ccho/cgla): identities
    and AUTHENTICATE test set 1 -> RES/CK/IK, through each profile's replayed dialect."""
    sim = modem_factory(profile)
    transport = open_modem_transport(str(sim.link_path), profile=profile, timeout=5)
    card = Card(transport)
    try:
        ids = card.identities()
        assert ids.application == "isim"
        assert ids.impi == "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
        assert "sip:alice@ims.mnc001.mcc001.3gppnetwork.org" in ids.impus
        assert ids.aid.startswith(ISIM_PREFIX)
        outcome = card.authenticate(RAND1, AUTN1)
        assert isinstance(outcome, AkaSuccess)
        assert outcome.res == RES1 and outcome.ck == CK1 and outcome.ik == IK1
    finally:
        card.close()
        transport.close()
    names = [c.split("=")[0] for c in sim.commands]
    if get_profile(profile).access == "cgla":
        assert transport.mode == "bound"
        assert "AT+CCHO" in names and "AT+CGLA" in names
    else:
        assert transport.mode == "basic"
        assert "AT+CGLA" not in names
    if profile == "telit-le910c1":
        assert "AT+CSIM=1" in sim.commands  # the lock went out before the first APDU


@pytest.mark.parametrize("profile", ["generic-at", "sierra-em7455"])
def test_mac_failure_and_sync_failure(modem_factory, profile):
    sim = modem_factory(profile)
    transport = open_modem_transport(str(sim.link_path), profile=profile, timeout=5)
    card = Card(transport)
    try:
        bad = bytearray(AUTN1)
        bad[-1] ^= 0x01  # MAC-A wrong
        assert isinstance(card.authenticate(RAND1, bytes(bad)), AkaMacFailure)
        old_sqn = (1).to_bytes(6, "big")  # the card has seen 32 already
        outcome = card.authenticate(RAND1, MILENAGE.generate_autn(RAND1, old_sqn, AMF1))
        assert isinstance(outcome, AkaSyncFailure)
        assert MILENAGE.resync_sqn(RAND1, outcome.auts) == (32).to_bytes(6, "big")
    finally:
        card.close()
        transport.close()


def test_cgla_transport_directly(modem_factory, soft_uicc):
    """CglaTransport opened on its own: CLA channel bits cleared by the TE, set by the modem."""
    sim = modem_factory("quectel-rm500q")
    port = AtPort(str(sim.link_path), profile="quectel-rm500q", timeout=5)
    try:
        aid = bytes.fromhex(ISIM_PREFIX)
        cgla = CsimTransport(port).bind_application(aid)
        assert isinstance(cgla, CglaTransport) and cgla.mode == "bound"
        assert cgla.session == "1"
        # STATUS with a CLA that (wrongly) carries channel 3: the driver sends channel bits 0
        resp = cgla.transmit(bytes.fromhex("83F2000000"))
        assert resp[-2:] == b"\x90\x00" or resp[-2] in (0x61, 0x6C)
        cgla.close()
        assert "AT+CCHC=1" in sim.commands
    finally:
        port.close()


def test_csim_bind_refused_for_csim_profiles(modem_factory):
    sim = modem_factory("quectel-ec25")
    transport = open_modem_transport(str(sim.link_path), profile="quectel-ec25", timeout=5)
    try:
        assert transport.use_logical_channel  # the ISIM goes on a MANAGE CHANNEL lchan over +CSIM
        with pytest.raises(NotImplementedError):
            transport.bind_application(bytes.fromhex(ISIM_PREFIX))
    finally:
        transport.close()


# --- the simulator really replays each quirk (raw pyserial), and the driver copes -------------------


def test_simulator_replays_quirks_raw(modem_factory):
    simcom = modem_factory("simcom-sim7600")
    text = _raw(simcom.link_path, f'AT+CCHO="{ISIM_PREFIX}"')
    assert "+CCHO:1" in text  # no space after the colon (lpac PR #238)
    assert text.startswith("AT+CCHO")  # echo on after power-on
    text = _raw(simcom.link_path, 'AT+CGLA=1,10,"00F2000000"')
    assert "+CGLA:" in text and "+CGLA: " not in text

    fibocom = modem_factory("fibocom-fm350")
    text = _raw(fibocom.link_path, f'AT+CCHO="{ISIM_PREFIX}"')
    assert re.search(r"\r\n\d\r\n", text) and "+CCHO" not in text.split("\r", 1)[1]  # bare (lpac#179)
    assert "ERROR" in _raw(fibocom.link_path, "AT+CGLA=?")  # no test commands (lpac#300)

    sierra = modem_factory("sierra-em7455")
    text = _raw(sierra.link_path, f'AT+CCHO="{ISIM_PREFIX}"')
    handle = text.split("+CCHO: ")[1].split()[0]
    assert len(handle) == 16 and int(handle, 16) > 19  # opaque handle (lpac#138)
    assert "ERROR" in _raw(sierra.link_path, "AT+CGLA=?")  # lpac PR #139
    assert _raw(sierra.link_path, f'AT+CGLA={handle},10,"00F2000000"').rstrip().endswith("OK")

    telit = modem_factory("telit-le910c1")
    assert "ERROR" in _raw(telit.link_path, 'AT+CSIM=10,"00F2000000"')  # locked until AT+CSIM=1
    assert _raw(telit.link_path, "AT+CSIM=1").rstrip().endswith("OK")
    assert '+CSIM: 2,"61' in _raw(telit.link_path, 'AT+CSIM=14,"00A40004023F00"')  # length in bytes

    ml307 = modem_factory("cmcc-ml307x")
    text = _raw(ml307.link_path, 'AT+CSIM=14,"00A40004023F00"')
    assert '"62' in text and text.count("9000") == 1  # the modem ran GET RESPONSE itself (mdd PR #74)


def test_power_on_echo_is_ignored(modem_factory):
    """init=False keeps the modem's echo (ATE1 at power-on): answers still parse."""
    sim = modem_factory("quectel-ec25")
    port = AtPort(str(sim.link_path), profile="quectel-ec25", init=False, timeout=5)
    try:
        assert sim.echo
        resp = CsimTransport(port, probe=False).transmit(bytes.fromhex("00A40004023F00"))
        assert resp[0] == 0x61
        assert port.command("ATI").lines == ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]
    finally:
        port.close()


@pytest.mark.parametrize(
    "answer",
    [
        '+CSIM: 4,"9000"',
        '+CSIM:4,"9000"',
        '+CSIM:  4, "9000"',
        '+CSIM: 10, "9000"',  # wrong length field (ModemManager Telit parser tests)
        '+CSIM: 2,"9000"',  # length in bytes
        '+CSIM: 4, 9000"',  # no opening quote
        "+CSIM: 4,9000",  # no quotes at all
        '4,"9000"',  # no prefix
        '+csim: 4,"9000"',
    ],
)
def test_csim_answer_variants(modem_factory, answer):
    sim = modem_factory()
    transport = open_modem_transport(str(sim.link_path), timeout=5)
    try:
        sim.reply_next(f"\r\n{answer}\r\n\r\nOK\r\n")
        assert transport.transmit(bytes.fromhex("00A40004023F00")) == b"\x90\x00"
    finally:
        transport.close()


@pytest.mark.parametrize("profile", ["quectel-rm500q", "generic-at"])
def test_long_answer_lines(modem_factory, profile, urcs):
    """Answers over 1 KiB (Quectel RM520, lpac PR #129) and a 4 KiB URC pass intact."""
    sim = modem_factory(profile)
    transport = open_modem_transport(str(sim.link_path), profile=profile, on_urc=urcs, timeout=5)
    try:
        payload = bytes(range(256)) * 8 + b"\x90\x00"  # 2050 bytes: a 4100-char line
        sim.reply_next(f'\r\n+CSIM: {len(payload) * 2},"{payload.hex().upper()}"\r\n\r\nOK\r\n')
        assert transport.transmit(bytes.fromhex("00B0000000")) == payload
        long_urc = "+CIREGU: 1," + "7" * 4096
        sim.emit_urc(long_urc)
        assert urcs.wait_for(lambda lines: long_urc in lines)
    finally:
        transport.close()


# --- URCs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["generic-at", "simcom-sim7600", "fibocom-fm350"])
def test_urcs_interleaved_with_apdu_transactions(modem_factory, urcs, profile):
    """URCs written in the middle of +CSIM / +CGLA answers reach on_urc; the APDU answers are intact."""
    sim = modem_factory(profile)
    transport = open_modem_transport(str(sim.link_path), profile=profile, on_urc=urcs, timeout=5)
    card = Card(transport)
    try:
        sim.emit_urc("+CIREPH: 0", during_next_command=True)
        sim.emit_urc("+CIREGU: 1,1", during_next_command=True)
        ids = card.identities()  # the first +CSIM carries the two URCs
        sim.emit_urc("+CIREPH:1", during_next_command=True)  # no space, as some modems send it
        outcome = card.authenticate(RAND1, AUTN1)
        assert ids.impi.startswith("001010000000001@")
        assert isinstance(outcome, AkaSuccess) and outcome.res == RES1 and outcome.ck == CK1
        assert urcs.wait_for(lambda lines: len(lines) >= 3)
        assert urcs.lines == ["+CIREPH: 0", "+CIREGU: 1,1", "+CIREPH:1"]
    finally:
        card.close()
        transport.close()


def test_ims_reporting_and_srvcc_urc_when_idle(modem_factory, urcs):
    sim = modem_factory("quectel-ec25")
    port = AtPort(str(sim.link_path), profile="quectel-ec25", on_urc=urcs, timeout=5)
    try:
        assert not sim.srvcc(0)  # reporting off: the modem says nothing
        assert enable_ims_reporting(port) == []
        assert sim.cirep == 1 and sim.cireg == 2
        assert port.command("AT+CIREP?").lines == ["+CIREP: 1,1"]
        assert sim.srvcc(0) and sim.srvcc(1)
        sim.emit_urc("+CIREPI: 1")
        sim.emit_urc('+QIND: "csq",20,99')  # a vendor URC from the profile's list
        assert urcs.wait_for(lambda lines: len(lines) >= 4)
        assert urcs.lines == ["+CIREPH: 0", "+CIREPH: 1", "+CIREPI: 1", '+QIND: "csq",20,99']
    finally:
        port.close()


def test_unknown_prefixed_line_during_command_goes_to_urc(modem_factory, urcs):
    sim = modem_factory()
    port = AtPort(str(sim.link_path), on_urc=urcs, timeout=5)
    try:
        sim.emit_urc("+CREG: 1", during_next_command=True)
        assert port.command("AT+CMEE?").lines == ["+CMEE: 1"]
        assert urcs.wait_for(lambda lines: lines == ["+CREG: 1"])
    finally:
        port.close()


# --- CRSM -----------------------------------------------------------------------------------------


def test_crsm_read_binary_record_status(modem_factory):
    sim = modem_factory()
    port = AtPort(str(sim.link_path), timeout=5)
    try:
        sw, data = port.crsm(176, 0x2FE2, 0, 0, 10)  # EF_ICCID, BCD with swapped nibbles
        assert sw == 0x9000
        digits = "".join(f"{b & 0xF:x}{b >> 4:x}" for b in data).rstrip("f")
        assert digits == "8988211000000000001"
        sw, rec = port.crsm(178, 0x2F00, 1, 4, 0)  # EF_DIR record 1
        assert sw == 0x9000 and rec[0] == 0x61 and rec[2] == 0x4F
        sw, _ = port.crsm(242, p3=0)
        assert sw in (0x9000,) or sw >> 8 in (0x61, 0x6C)
        sw, data = port.crsm(176, 0x6F42, 0, 0, 4)  # not there
        assert sw == 0x6A82 and data == b""
    finally:
        port.close()


# --- secrets ---------------------------------------------------------------------------------------


def test_keys_never_logged(modem_factory, caplog):
    caplog.set_level(logging.DEBUG)
    sim = modem_factory("sierra-em7455")
    transport = open_modem_transport(str(sim.link_path), profile="sierra-em7455", timeout=5)
    card = Card(transport)
    try:
        outcome = card.authenticate(RAND1, AUTN1)
        assert isinstance(outcome, AkaSuccess)
    finally:
        card.close()
        transport.close()
    text = caplog.text.lower() + " ".join(sim.commands).lower()
    for secret in (RES1, CK1, IK1):
        assert secret.hex() not in text
        assert secret.hex()[:16] not in text
    assert "<hex:" in caplog.text
    assert redact('+CGLA: 24,"DB08A54211D5E3BA50BF9000"') == '+CGLA: 24,"<hex:24>"'


# --- CLI as subprocesses ------------------------------------------------------------------------------


def _wait_path(path: Path, proc: subprocess.Popen) -> None:
    for _ in range(400):
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"lab modem exited: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.025)
    raise AssertionError(f"{path} never appeared")


def test_cli_lab_modem_with_control_fifo(tmp_path, subscriber_file, urcs):
    link, control = tmp_path / "ttyMODEM", tmp_path / "modem.ctl"
    env = dict(os.environ, UE_AGENT_MODEM_CONTROL=str(control))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ue_agent", "lab", "modem", "--subscriber", str(subscriber_file),
         "--pty", str(link), "--profile", "simcom-sim7600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_path(control, proc)
        _wait_path(link, proc)
        transport = open_modem_transport(str(link), profile="simcom-sim7600", on_urc=urcs, timeout=5)
        card = Card(transport)
        try:
            assert card.identities().application == "isim"
            enable_ims_reporting(transport.port)
            with open(control, "w") as fifo:
                fifo.write("!srvcc 0\n+CIREPH:2\n")
            assert urcs.wait_for(lambda lines: len(lines) >= 2)
            assert urcs.lines == ["+CIREPH:0", "+CIREPH:2"]
        finally:
            card.close()
            transport.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert f"on {link}" in out
    assert not link.exists() and not control.exists()


def test_cli_lab_modem_replays_behaviours_and_resets_from_the_fifo(tmp_path, subscriber_file):
    """``!shape KIND key=value`` and ``!reset`` on the control FIFO of ``ue-agent lab modem``."""
    import time

    link, control = tmp_path / "ttyMODEM", tmp_path / "modem.ctl"
    env = dict(os.environ, UE_AGENT_MODEM_CONTROL=str(control))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ue_agent", "lab", "modem", "--subscriber", str(subscriber_file),
         "--pty", str(link), "--profile", "generic-at"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        _wait_path(control, proc)
        _wait_path(link, proc)
        transport = open_modem_transport(str(link), profile="generic-at", timeout=1)
        card = Card(transport)
        try:
            with open(control, "w") as fifo:
                fifo.write("!shape missing_ok match=AT+CSIM skip=2\n!shape noise lines=SMS|0,1|+CREG:1\n")
            time.sleep(0.3)  # the simulator reads the FIFO between commands
            impi = card.identities().impi
            assert transport.port.resyncs == 1 and transport.retries == 1
            with open(control, "w") as fifo:
                fifo.write("!reset\n")
            deadline = time.monotonic() + 5
            while transport.port.resets == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert transport.port.resets == 1
            card.refresh()
            assert card.identities().impi == impi
        finally:
            card.close()
            transport.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err


def test_cli_lab_modem_unknown_profile_fails(tmp_path, subscriber_file):
    proc = subprocess.run(
        [sys.executable, "-m", "ue_agent", "lab", "modem", "--subscriber", str(subscriber_file),
         "--pty", str(tmp_path / "tty"), "--profile", "nokia-3310"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "config.unknown_profile" in proc.stderr


@pytest.mark.parametrize("profile", ["generic-at", "sierra-em7455"])
def test_usim_only_card_over_modem(modem_factory, tmp_path, profile):
    """A card without ISIM: identities from the USIM IMSI, AKA on the USIM, over +CSIM and +CGLA."""
    from tests.fixtures.lab import write_subscriber
    from ue_agent.lab.uicc import SoftUicc
    from ue_agent.subscriber import load_subscriber

    uicc = SoftUicc(load_subscriber(write_subscriber(tmp_path / "usim.toml", extra="isim = false\n")))
    sim = modem_factory(profile, uicc=uicc)
    transport = open_modem_transport(str(sim.link_path), profile=profile, timeout=5)
    card = Card(transport)
    try:
        ids = card.identities()
        assert ids.application == "usim" and ids.imsi == "001010000000001"
        assert ids.impi == "001010000000001@ims.mnc001.mcc001.3gppnetwork.org"
        outcome = card.authenticate(RAND1, AUTN1)
        assert isinstance(outcome, AkaSuccess) and outcome.res == RES1 and outcome.ik == IK1
    finally:
        card.close()
        transport.close()
