"""Wireshark's MIKEY dissector (tshark) reads the conference messages: the focus's TRANSFER_RESP
with its KEMAC (dial-in), its TRANSFER_INIT with a KEMAC (dial-out) and its CSB updates (RFC 6043
5.2), as far as it knows them (tests/test_tshark_mikey.py explains the views), with no malformed
packet or expert error and our values read back."""

from __future__ import annotations

import shutil

import pytest

from tests.test_conference_flows import CONF, MEDIA, Agent, Lab
from tests.test_tshark_mikey import assert_decode_cleanly
from ue_agent.kms import mikey, session
from ue_agent.lab.focus import Conference

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark is not installed (scripts/setup)"
)


class FamilyLab(Lab):
    """The lab with tickets of one PRF family (tshark 4.0 knows the MIKEY-1 algorithms only)."""

    def __init__(self, prf_func: int) -> None:
        super().__init__()
        self.prf_func = prf_func

    def request(self, who, own, recipients, **kw):
        return super().request(who, own, recipients, prf_func=self.prf_func, **kw)


def conference_messages(prf_func: int) -> list[bytes]:
    lab = FamilyLab(prf_func)
    conf = Conference(CONF, lab.clock)
    a, b = Agent(lab, "alice"), Agent(lab, "bob")
    out: list[bytes] = []
    a.dial_in(conf)
    out.append(a.transfer_resp)
    lab.clock.now += 1
    out += list(b.dial_in(conf).values())  # alice's update
    out.append(b.transfer_resp)
    issued = lab.request(
        "focus", CONF, [lab_uri := "sip:carol@ims.example.org"], flags=session.FLAGS_FORKED | mikey.F_L
    )
    out.append(conf.dial_out(issued, lab_uri, MEDIA))
    lab.clock.now += 1
    out += list(conf.leave(a.uri).values())  # bob's update
    return out


def test_conference_messages_decode_cleanly_in_tshark(tmp_path) -> None:
    exchanged = conference_messages(mikey.PRF_HMAC_SHA_256) + conference_messages(mikey.PRF_MIKEY_1)
    checked = assert_decode_cleanly(exchanged, tmp_path / "conference.pcap")
    assert {"Kemac", "Verification", "IdRole", "Timestamp"} <= checked
