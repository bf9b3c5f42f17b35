"""PC/SC faults on the real stack: card pulled mid-command, pcscd down (stopped and
crashed), reader gone, exclusive access, a mute card, a missing status word, card events.

Every wait is bounded by the transport's ``wait_s`` or a queue timeout; nothing asserts
how long anything took. Tests that stop pcscd start it again in ``finally`` so the shared
session fixture stays usable.
"""

from __future__ import annotations

import queue

import pytest

from tests.fixtures.pcsc import PIDFILE, wait_reader
from tests.test_pcsc import AUTN, RAND, RES
from ue_agent.card.results import AkaSuccess
from ue_agent.errors import TransportError

pytestmark = pytest.mark.pcsc

SELECT_MF = bytes.fromhex("00a40004023f00")


def _pcsc_error(fn, *args) -> TransportError:
    with pytest.raises(TransportError) as exc:
        fn(*args)
    return exc.value


def _is_authenticate(apdu: bytes) -> bool:
    return apdu[1] == 0x88


def test_card_removed_during_authenticate_then_recovers(vpcd_card):
    from ue_agent.card.session import Card
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    card = Card(PcscTransport(reader, wait_s=10))
    try:
        card.identities()  # ISIM selected, the card in use
        sqn_before = server.uicc.highest_sqn
        apdus_before = server.apdus
        server.remove_on_apdu(_is_authenticate)  # pulled as the AUTHENTICATE arrives

        err = _pcsc_error(card.authenticate, RAND, AUTN)
        assert err.code == "card.removed"
        assert err.details["reader"] == reader
        assert "not retried" in err.message
        # the card never executed it and nobody sent it again
        assert server.apdus == apdus_before
        assert server.uicc.highest_sqn == sqn_before

        # still out: the next command says so instead of hanging
        assert _pcsc_error(card.transport.transmit, SELECT_MF).code in ("card.absent", "card.removed")

        server.insert()
        card.transport.wait_for_card(15)
        card.refresh()  # a reinserted card starts from its ATR state
        out = card.authenticate(RAND, AUTN)
        assert isinstance(out, AkaSuccess) and out.res == RES
    finally:
        card.close()


def test_card_pulled_between_commands_is_reported_once(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    with PcscTransport(reader) as t:
        t.transmit(SELECT_MF)
        server.remove()
        wait_reader(reader, False)
        server.insert()
        wait_reader(reader, True)
        # the old handle saw a removal: the command is not sent to the new card
        err = _pcsc_error(t.transmit, SELECT_MF)
        assert err.code == "card.removed"
        assert err.details["pcsc_code"] == "0x80100069"
        # the next command connects to the card now in the reader
        assert t.transmit(SELECT_MF)[-2:] != b""
        assert t.connected


def test_pcscd_not_running_then_recovers(pcscd, vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    t = PcscTransport(reader, wait_s=10)
    fresh = PcscTransport(reader, wait_s=10)
    try:
        t.transmit(SELECT_MF)
        pcscd.stop()
        try:
            err = _pcsc_error(fresh.transmit, SELECT_MF)
            assert err.code == "card.pcsc_unavailable"
            assert err.details["pcsc_code"] == "0x8010001D"
            # the connected transport loses its card with pcscd
            assert _pcsc_error(t.transmit, SELECT_MF).code in ("card.pcsc_unavailable", "card.removed")
            assert _pcsc_error(fresh.wait_for_card, 0.5).code == "card.pcsc_unavailable"
        finally:
            pcscd.start()
        # the card server reconnects by itself; each transport comes back (one at a time:
        # both want the card exclusively)
        t.wait_for_card(20)
        assert t.transmit(SELECT_MF)[0] in (0x61, 0x90)
        t.close()
        fresh.wait_for_card(20)
        assert fresh.transmit(SELECT_MF)[0] in (0x61, 0x90)
    finally:
        t.close()
        fresh.close()
        pcscd.start()


def test_pcscd_crash_leaves_stale_files_that_start_clears(pcscd, vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    try:
        pcscd.kill()  # SIGKILL: /run/pcscd/pcscd.pid and pcscd.comm stay behind
        assert PIDFILE.exists()
        assert _pcsc_error(PcscTransport(reader).transmit, SELECT_MF).code == "card.pcsc_unavailable"
    finally:
        pcscd.start()
    assert pcscd.running
    with PcscTransport(reader) as t:
        t.wait_for_card(20)
        assert t.transmit(SELECT_MF)[0] in (0x61, 0x90)


def test_reader_not_found(pcscd):
    from ue_agent.drivers.pcsc import PcscTransport

    pcscd.start()
    with PcscTransport("Identiv uTrust 4701") as t:
        err = _pcsc_error(t.transmit, SELECT_MF)
    assert err.code == "card.reader_not_found"
    assert set(pcscd.readers) <= set(err.details["readers"])
    assert "Identiv" in err.message


def test_reader_gone(pcscd, vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    t = PcscTransport(reader)
    try:
        t.transmit(SELECT_MF)
        pcscd.start(friendly="Other PCD")  # pcscd comes back without our reader
        codes = set()
        for _ in range(3):  # the dead handle first, then the missing reader
            err = _pcsc_error(t.transmit, SELECT_MF)
            codes.add(err.code)
            if err.code == "card.reader_gone":
                break
        assert "card.reader_gone" in codes, codes
        assert err.details["reader"] == reader
    finally:
        t.close()
        pcscd.start()


def test_exclusive_access(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    with PcscTransport(reader) as first:
        first.transmit(SELECT_MF)
        second = PcscTransport(reader, wait_s=5)
        shared = PcscTransport(reader, exclusive=False, wait_s=5)
        try:
            err = _pcsc_error(second.transmit, SELECT_MF)
            assert err.code == "card.sharing_violation"
            assert err.details["pcsc_code"] == "0x8010000B"
            assert _pcsc_error(shared.transmit, SELECT_MF).code == "card.sharing_violation"
            # waiting for the card rides out the other holder, then gives up with its error
            assert _pcsc_error(second.wait_for_card, 0.3).code == "card.sharing_violation"
            first.close()
            second.wait_for_card(10)
            assert second.transmit(SELECT_MF)[0] in (0x61, 0x90)
        finally:
            second.close()
            shared.close()


def test_mute_card_times_out_and_is_not_retried(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    with PcscTransport(reader, wait_s=1.0) as t:
        t.transmit(SELECT_MF)
        server.uicc.mute()
        commands = server.uicc.commands
        err = _pcsc_error(t.transmit, SELECT_MF)
        assert err.code == "card.timeout"
        assert "not retried" in err.message
        # the lost command still occupies the reader: say so at once, do not queue behind it
        assert _pcsc_error(t.transmit, SELECT_MF).code == "card.timeout"
        assert server.uicc.commands == commands  # mute: nothing executed, nothing resent
        server.uicc.unmute()
        server.remove()  # pulling the card ends the stuck command
        server.insert()
        t.wait_for_card(15)
        assert t.transmit(SELECT_MF)[0] in (0x61, 0x90)


def test_answer_without_status_word_is_an_error(vpcd_card):
    """pyscard#18: a reader answering fewer than two bytes is not success."""
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    with PcscTransport(reader, wait_s=5) as t:
        t.transmit(SELECT_MF)
        server.uicc.inject_response(b"\x90")
        err = _pcsc_error(t.transmit, SELECT_MF)
        assert err.code == "card.transport"
        assert err.details["response_length"] == 1
        assert "not retried" in err.message
        t.wait_for_card(10)  # still there: the transport reconnects
        assert t.transmit(SELECT_MF)[0] in (0x61, 0x90)


def test_card_events_reach_the_callback(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    events: queue.Queue[tuple[bool, str]] = queue.Queue()
    with PcscTransport(reader, on_card_event=lambda present, name: events.put((present, name)), poll_s=0.2):
        assert events.get(timeout=10) == (True, reader)  # the state found at start
        server.remove()
        assert events.get(timeout=10) == (False, reader)
        server.insert()
        assert events.get(timeout=10) == (True, reader)


def test_card_events_follow_a_pcscd_restart(pcscd, vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    events: queue.Queue[tuple[bool, str]] = queue.Queue()
    with PcscTransport(reader, on_card_event=lambda present, name: events.put((present, name)), poll_s=0.2):
        assert events.get(timeout=10) == (True, reader)
        try:
            pcscd.stop()
            assert events.get(timeout=10) == (False, reader)
        finally:
            pcscd.start()
        assert events.get(timeout=20) == (True, reader)


def test_callback_failure_does_not_stop_the_monitor(vpcd_card):
    from ue_agent.drivers.pcsc import PcscTransport

    server, reader = vpcd_card
    seen: queue.Queue[bool] = queue.Queue()

    def callback(present: bool, name: str) -> None:
        seen.put(present)
        raise RuntimeError("consumer bug")

    with PcscTransport(reader, on_card_event=callback, poll_s=0.2):
        assert seen.get(timeout=10) is True
        server.remove()
        assert seen.get(timeout=10) is False
