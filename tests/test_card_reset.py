"""Modem and card resets under the card layer, and the channel lifecycle (issue 9, items 2 and 3).

A reset seen before an operation (RDY, +CPIN: READY, the port back) is handled
transparently, and so is one met during an operation when the failing command provably
never ran (6881, a session the modem forgot); one around a lost answer fails the operation
with ``card.reset`` and the next one succeeds. Channels are closed on
close; a channel record lets a successor close what a killed predecessor left open.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ue_agent.card.results import AkaSuccess
from ue_agent.card.session import Card
from ue_agent.channel_record import ChannelRecordFile, reclaim
from ue_agent.errors import CardError
from ue_agent.lab.uicc import SoftUicc, SoftUiccTransport

serial = pytest.importorskip("serial", reason="pyserial is not installed")

from ue_agent.drivers.at_modem import enable_ims_reporting, open_modem_transport  # noqa: E402


def challenge(uicc: SoftUicc) -> tuple[bytes, bytes]:
    """A fresh RAND/AUTN for the card's subscriber (next SQN)."""
    from ue_agent.crypto.milenage import Milenage

    sub = uicc.subscriber
    rand = bytes(range(16))
    sqn = uicc.highest_sqn + 1
    m = Milenage(sub.k.reveal(), sub.opc.reveal())
    return rand, m.generate_autn(rand, sqn.to_bytes(6, "big"), sub.amf)


def aka_ok(card: Card, uicc: SoftUicc) -> None:
    outcome = card.authenticate(*challenge(uicc))
    assert isinstance(outcome, AkaSuccess)
    outcome.zeroize()


# --- sans-IO: the soft card in process ------------------------------------------------------


def test_card_reset_met_during_an_operation_is_transparent(soft_uicc):
    """Channel 1 answers 6881 after a reset nobody announced: AUTHENTICATE did not run on the
    card, so it runs again on a fresh channel."""
    card = Card(SoftUiccTransport(soft_uicc, use_logical_channel=True))
    aka_ok(card, soft_uicc)
    assert soft_uicc.open_channels == [0, 1]
    soft_uicc.reset()  # no one told the card layer: channel 1 answers 6881 now
    aka_ok(card, soft_uicc)
    assert card.resets == 1 and soft_uicc.open_channels == [0, 1]
    assert card.identities().impi == soft_uicc.subscriber.impi
    card.close()
    assert soft_uicc.open_channels == [0]


def test_a_reset_around_a_lost_answer_fails_the_operation_with_card_reset(modem_factory, soft_uicc):
    """The AUTHENTICATE ran but its answer came after the timeout, and the modem printed RDY
    meanwhile: running it again could burn a SQN, so it fails with card.reset; the next runs."""
    sim = modem_factory("generic-at")
    t = open_modem_transport(str(sim.link_path), timeout=1)
    card = Card(t)
    try:
        aka_ok(card, soft_uicc)
        sim.shape_next("late", match="AT+CSIM", delay=1.6)
        rdy = threading.Timer(0.3, sim.emit_urc, args=("RDY",))
        rdy.start()
        with pytest.raises(CardError) as ei:
            card.authenticate(*challenge(soft_uicc))
        rdy.join()
        assert ei.value.code == "card.reset" and ei.value.details["cause"] == "modem.timeout"
        aka_ok(card, soft_uicc)
        assert card.resets == 1
    finally:
        card.close()
        t.close()


def test_close_closes_the_channel_and_leaks_none_over_many_facades(soft_uicc):
    for _ in range(10):  # more than the card's 3 logical channels
        card = Card(SoftUiccTransport(soft_uicc, use_logical_channel=True))
        aka_ok(card, soft_uicc)
        card.close()
    assert soft_uicc.open_channels == [0]


def test_channel_record_reclaims_what_a_killed_agent_left(tmp_path, soft_uicc):
    path = tmp_path / "channels.json"
    for _ in range(6):  # six agents killed without closing: each run reclaims the last one's
        transport = SoftUiccTransport(soft_uicc, use_logical_channel=True)
        card = Card(transport)
        reclaim(card, ChannelRecordFile(path, transport.name))
        aka_ok(card, soft_uicc)
        assert json.loads(path.read_text())["channels"] == [f"mc:{soft_uicc.open_channels[-1]}"]
        # no close(): SIGKILL
    assert len(soft_uicc.open_channels) == 2
    card = Card(SoftUiccTransport(soft_uicc, use_logical_channel=True))
    record = ChannelRecordFile(path, card.transport.name)
    assert reclaim(card, record) == 1
    card.close()
    assert soft_uicc.open_channels == [0] and json.loads(path.read_text())["channels"] == []


def test_channel_record_of_another_card_path_is_not_used(tmp_path, soft_uicc):
    path = tmp_path / "channels.json"
    path.write_text(json.dumps({"transport": "pcsc:Other Reader", "channels": ["mc:1"]}))
    soft_uicc.process(bytes.fromhex("0070000001"))  # someone else's channel 1
    card = Card(SoftUiccTransport(soft_uicc, use_logical_channel=True))
    assert reclaim(card, ChannelRecordFile(path, card.transport.name)) == 0
    assert 1 in soft_uicc.open_channels  # not ours: left alone


def test_without_a_record_channels_leak_and_the_card_runs_out(soft_uicc):
    """What the record prevents: three killed agents use up a 4-channel card."""
    for _ in range(3):
        aka_ok(Card(SoftUiccTransport(soft_uicc, use_logical_channel=True)), soft_uicc)
    with pytest.raises(CardError) as ei:
        aka_ok(Card(SoftUiccTransport(soft_uicc, use_logical_channel=True)), soft_uicc)
    assert ei.value.code == "card.not_supported" and ei.value.details["sw"] == "6A81"


# --- over the pty modem -------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["generic-at", "quectel-rm500q", "sierra-em7455", "fibocom-fm350"])
def test_modem_reset_between_two_authentications(modem_factory, soft_uicc, profile):
    """RDY / +CPIN: READY between two AKA runs: the second one succeeds, E0/V1/CMEE and the
    SRVCC reporting are sent again, the reset is counted and announced."""
    sim = modem_factory(profile)
    t = open_modem_transport(str(sim.link_path), profile=profile, timeout=2)
    announced: list[str] = []
    t.on_reset = announced.append
    card = Card(t)
    try:
        assert enable_ims_reporting(t.port) == []
        aka_ok(card, soft_uicc)
        sim.commands.clear()
        sim.reset_modem()
        assert sim.cirep == 0 and soft_uicc.open_channels == [0]
        deadline = time.monotonic() + 5
        while not announced and time.monotonic() < deadline:
            time.sleep(0.01)
        assert announced
        assert card.check() is True  # what the daemon's worker does on the announcement
        aka_ok(card, soft_uicc)
        assert card.resets == 1 and t.port.resets >= 1
        setup = [c.upper() for c in sim.commands]
        for cmd in ("ATE0", "ATV1", "AT+CMEE=1", "AT+CIREP=1"):
            assert cmd in setup
        assert sim.cirep == 1  # SRVCC reporting on again
        assert len(soft_uicc.open_channels) == 2
    finally:
        card.close()
        t.close()
    assert soft_uicc.open_channels == [0]


@pytest.mark.parametrize("profile", ["generic-at", "sierra-em7455"])
def test_silent_restart_between_two_operations_is_transparent(modem_factory, soft_uicc, profile):
    """No URC at all: the card's 6881 (MANAGE CHANNEL path) or the modem's unknown +CGLA
    session proves the AUTHENTICATE never ran: it runs again on a fresh channel."""
    sim = modem_factory(profile)
    t = open_modem_transport(str(sim.link_path), profile=profile, timeout=2)
    card = Card(t)
    try:
        aka_ok(card, soft_uicc)
        sim.reset_modem(urcs=())  # restarts silently: echo on, CMEE=0, no channels
        aka_ok(card, soft_uicc)
        assert card.resets == 1
        assert "AT+CMEE=1" in [c.upper() for c in sim.commands[-12:]]  # set up again
    finally:
        card.close()
        t.close()


def test_port_gone_and_back_between_two_authentications(modem_factory, soft_uicc):
    sim = modem_factory("quectel-rm500q")
    t = open_modem_transport(str(sim.link_path), profile="quectel-rm500q", timeout=2, reopen_wait=2)
    card = Card(t)
    try:
        aka_ok(card, soft_uicc)
        sim.vanish()
        soft_uicc.reset()
        sim.start()
        aka_ok(card, soft_uicc)  # the port came back before the operation: transparent
        assert card.resets == 1
    finally:
        card.close()
        t.close()


def test_record_file_is_private_and_atomic(tmp_path: Path):
    rec = ChannelRecordFile(tmp_path / "channels.json", "at:/dev/ttyUSB2")
    rec.add("ccho:1")
    assert (tmp_path / "channels.json").stat().st_mode & 0o777 == 0o600
    assert ChannelRecordFile(tmp_path / "channels.json", "at:/dev/ttyUSB2").leftovers == ["ccho:1"]
    rec.discard("ccho:1")
    assert ChannelRecordFile(tmp_path / "channels.json", "at:/dev/ttyUSB2").leftovers == []
