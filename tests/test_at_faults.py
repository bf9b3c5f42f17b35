"""AT modem faults: ERROR, +CME ERROR, garbage, silence, a port that vanishes mid-command, recovery,
commands the modem lacks or the profile forbids. Every wait in the driver is bounded."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("serial", reason="pyserial is not installed")

from ue_agent.card.session import Card  # noqa: E402
from ue_agent.drivers.at_modem import AtPort, CglaTransport, CsimTransport, open_modem_transport  # noqa: E402
from ue_agent.errors import TransportError  # noqa: E402
from ue_agent.lab.modem import ModemSimulator  # noqa: E402

SELECT_MF = bytes.fromhex("00A40004023F00")
#: UPDATE BINARY: changes the card, so never sent twice by the driver
UPDATE = bytes.fromhex("00D6000001FF")
ISIM_PREFIX = bytes.fromhex("a0000000871004")


@pytest.fixture
def csim(modem_factory):
    sim = modem_factory()
    transport = open_modem_transport(str(sim.link_path), timeout=2, reopen_wait=0.5)
    yield sim, transport
    transport.close()


def test_error(csim):
    sim, t = csim
    sim.fail_next("error")
    with pytest.raises(TransportError) as ei:
        t.transmit(SELECT_MF)
    assert ei.value.code == "modem.error"
    assert t.transmit(SELECT_MF)[0] == 0x61  # the port is still usable


def test_cme_error_code_in_details(csim):
    sim, t = csim
    sim.fail_next("cme_error", 13)
    with pytest.raises(TransportError) as ei:
        t.transmit(SELECT_MF)
    assert ei.value.code == "modem.cme_error" and ei.value.details["cme"] == 13


def test_cme_error_verbose_text(csim):
    sim, t = csim
    t.port.command("AT+CMEE=2")
    with pytest.raises(TransportError) as ei:
        t.port.command('AT+CSIM=3,"00A"')  # odd length: incorrect parameters
    assert ei.value.code == "modem.cme_error" and ei.value.details["cme"] == "incorrect parameters"


def test_cms_error(csim):
    sim, t = csim
    sim.reply_next("\r\n+CMS ERROR: 500\r\n")
    with pytest.raises(TransportError) as ei:
        t.port.command("AT+CMGS=1")
    assert ei.value.code == "modem.cms_error" and ei.value.details["cms"] == 500


def test_garbage(csim):
    sim, t = csim
    sim.fail_next("garbage")
    with pytest.raises(TransportError) as ei:
        t.transmit(UPDATE)
    assert ei.value.code == "modem.garbage"
    assert t.transmit(SELECT_MF)[0] == 0x61


def test_garbage_on_an_idempotent_apdu_is_sent_again(csim):
    sim, t = csim
    sim.fail_next("garbage")
    assert t.transmit(SELECT_MF)[0] == 0x61  # SELECT changes nothing: sent once more
    assert t.retries == 1


@pytest.mark.parametrize(
    "answer",
    ['+CSIM: 4,"90"', '+CSIM: 5,"9000F"', '+CSIM: 4,"ZZ00"', "+CSIM: ok", '+CSIM: 4,""'],
)
def test_malformed_csim_answers(csim, answer):
    sim, t = csim
    sim.reply_next(f"\r\n{answer}\r\n\r\nOK\r\n")
    with pytest.raises(TransportError) as ei:
        t.transmit(UPDATE)
    assert ei.value.code == "modem.garbage"


def test_garbage_error_text_carries_no_key_bytes(csim):
    sim, t = csim
    ck = "B40BA9A3C58B2A05BBF0D987B21BF8CB"
    sim.reply_next(f"\r\n+CSIM: xx,DB10{ck}\r\n\r\nOK\r\n")
    with pytest.raises(TransportError) as ei:
        t.transmit(UPDATE)
    assert ei.value.code == "modem.garbage"
    assert ck.lower() not in str(ei.value.to_dict()).lower()
    assert ck[:8].lower() not in str(ei.value.to_dict()).lower()


def test_silence_times_out_then_resyncs(csim):
    sim, t = csim
    sim.fail_next("silence")
    with pytest.raises(TransportError) as ei:
        t.transmit(UPDATE)
    assert ei.value.code == "modem.timeout"
    assert ei.value.details["timeout_s"] == 2
    assert t.transmit(SELECT_MF)[0] == 0x61  # 'AT' resync, then the APDU
    assert t.port.resyncs == 1
    sim.fail_next("silence")
    assert t.transmit(SELECT_MF)[0] == 0x61  # timed out, resync, sent again
    assert t.port.resyncs == 2 and t.retries == 1


def test_forbidden_command_never_sent(modem_factory):
    sim = modem_factory("quectel-ec25")
    port = AtPort(str(sim.link_path), profile="quectel-ec25", timeout=2)
    try:
        with pytest.raises(TransportError) as ei:
            port.command("AT+CUAD")
        assert ei.value.code == "modem.not_supported"
        assert not any("CUAD" in c for c in sim.commands)
    finally:
        port.close()


def test_bad_apdu_and_bad_command(csim):
    _, t = csim
    with pytest.raises(TransportError) as ei:
        t.transmit(b"\x00\xa4")
    assert ei.value.code == "modem.bad_apdu"
    with pytest.raises(TransportError) as ei:
        t.port.command("AT\rATZ")
    assert ei.value.code == "modem.bad_command"


def test_csim_not_offered(modem_factory):
    sim = modem_factory()
    port = AtPort(str(sim.link_path), timeout=2)
    try:
        sim.fail_next("error")  # the answer to AT+CSIM=?
        with pytest.raises(TransportError) as ei:
            CsimTransport(port, probe=True)
        assert ei.value.code == "modem.not_supported"
        sim.fail_next("cme_error", 4)  # "operation not supported" on the command itself
        with pytest.raises(TransportError) as ei:
            CsimTransport(port, probe=False).transmit(SELECT_MF)
        assert ei.value.code == "modem.not_supported"
    finally:
        port.close()


def test_ccho_not_offered(modem_factory):
    sim = modem_factory()  # generic-at: no +CCHO in this modem
    port = AtPort(str(sim.link_path), timeout=2)
    try:
        with pytest.raises(TransportError) as ei:
            CglaTransport(port, ISIM_PREFIX)
        assert ei.value.code == "modem.not_supported"
    finally:
        port.close()


def test_ccho_for_missing_application(modem_factory):
    sim = modem_factory("quectel-rm500q")
    port = AtPort(str(sim.link_path), profile="quectel-rm500q", timeout=2)
    try:
        with pytest.raises(TransportError) as ei:
            CglaTransport(port, bytes.fromhex("a000000087100999"))
        assert ei.value.code == "modem.cme_error" and ei.value.details["cme"] == 13
        with pytest.raises(TransportError) as ei:
            port.command('AT+CGLA=7,10,"00F2000000"')  # no such session
        assert ei.value.details["cme"] == 21
    finally:
        port.close()


def test_card_removed_behind_the_modem(modem_factory, soft_uicc):
    sim = modem_factory()
    t = open_modem_transport(str(sim.link_path), timeout=2)
    try:
        soft_uicc.remove()
        with pytest.raises(TransportError) as ei:
            t.transmit(SELECT_MF)
        assert ei.value.code == "modem.cme_error" and ei.value.details["cme"] == 10  # SIM not inserted
    finally:
        t.close()


def test_telit_without_lock_is_refused(modem_factory):
    sim = modem_factory("telit-le910c1")
    port = AtPort(str(sim.link_path), profile="telit-le910c1", init=False, timeout=2)
    try:
        port.command("AT+CMEE=1")
        with pytest.raises(TransportError) as ei:
            CsimTransport(port).transmit(SELECT_MF)
        assert ei.value.details["cme"] == 3  # operation not allowed until AT+CSIM=1
    finally:
        port.close()


# --- the port vanishes --------------------------------------------------------------------------


def test_vanish_mid_command_then_recovery_at_same_path(modem_factory, soft_uicc):
    sim = modem_factory()
    t = open_modem_transport(str(sim.link_path), timeout=5, reopen_wait=0.5)
    try:
        generation = t.port.generation
        sim.fail_next("vanish")  # the modem drops off the bus instead of answering
        with pytest.raises(TransportError) as ei:
            t.transmit(SELECT_MF)
        assert ei.value.code == "modem.gone"
        assert not sim.link_path.exists()
        with pytest.raises(TransportError) as ei:  # still gone: bounded wait, then modem.gone
            t.transmit(SELECT_MF)
        assert ei.value.code == "modem.gone"
        # the modem comes back at the same path (a new pty behind the symlink)
        sim.start()
        assert t.transmit(SELECT_MF)[0] == 0x61
        assert t.port.generation > generation
    finally:
        t.close()


def test_recovery_while_waiting(modem_factory, tmp_path, soft_uicc):
    """The path comes back during the driver's bounded reopen wait."""
    sim = modem_factory()
    t = open_modem_transport(str(sim.link_path), timeout=5, reopen_wait=10)
    try:
        sim.vanish()
        back = threading.Timer(0.2, sim.start)
        back.start()
        assert t.transmit(SELECT_MF)[0] == 0x61
        back.join()
    finally:
        t.close()


def test_cgla_session_reopened_after_replug(modem_factory, soft_uicc):
    sim = modem_factory("sierra-em7455")
    t = open_modem_transport(str(sim.link_path), profile="sierra-em7455", timeout=5, reopen_wait=5)
    card = Card(t)
    try:
        assert card.identities().application == "isim"
        bound = t.bind_application(ISIM_PREFIX)
        first = bound.session
        sim.vanish()
        soft_uicc.reset()  # the modem's power cycle resets the card
        sim.start()
        with pytest.raises(TransportError) as ei:  # the APDU in progress fails...
            bound.transmit(bytes.fromhex("80F2000000"))
        assert ei.value.code == "modem.reopened"
        resp = bound.transmit(bytes.fromhex("80F2000000"))  # ...the next one reopens the channel
        assert resp[-2:] == b"\x90\x00" or resp[-2] in (0x61, 0x6C)
        assert bound.session != first  # a new opaque handle from the new CCHO
        bound.close()
    finally:
        card.close()
        t.close()


def test_open_missing_port():
    with pytest.raises(TransportError) as ei:
        AtPort("/nonexistent/ttyUSB9", timeout=1)
    assert ei.value.code == "modem.gone"


def test_silent_modem_at_open(tmp_path, soft_uicc):
    sim = ModemSimulator(soft_uicc, "generic-at", tmp_path / "tty").start()
    try:
        for _ in range(6):
            sim.fail_next("silence")
        with pytest.raises(TransportError) as ei:
            AtPort(str(sim.link_path), timeout=0.3)
        assert ei.value.code == "modem.timeout"
    finally:
        sim.close()
