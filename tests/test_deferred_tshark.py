"""Wireshark's MIKEY dissector (tshark) reads the one-way REQUEST_INIT/RESP, the one-way
TRANSFER_INIT of deferred delivery and the message TRANSFER_INIT (its private-use prot type and
General Extension) without a malformed packet or expert error, payload by payload as far as it
follows (the views of tests/test_tshark_mikey.py)."""

from __future__ import annotations

import asyncio

from tests.test_deferred import _Client
from tests.test_kms_flows import USERS, Lab
from tests.test_tshark_mikey import assert_decode_cleanly, pytestmark
from ue_agent.kms import deferred, messaging
from ue_agent.kms.streams import SrtpStream, TlsStream

__all__ = ["pytestmark"]


class _Recording(Lab):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def handle(self, raw: bytes) -> tuple[int, bytes]:
        status, body = super().handle(raw)
        self.sent += [raw, body]
        return status, body


def test_one_way_and_message_transfer_inits_decode_cleanly(tmp_path):
    lab = _Recording()
    a = _Client(lab, "alice")
    off = asyncio.run(deferred.offer_one_way(a, USERS["bob"], [SrtpStream(ssrc=7), TlsStream()]))  # type: ignore[arg-type]
    msg = asyncio.run(
        messaging.protect_message(a, [USERS["bob"], USERS["carol"]], b"hi", e2m=USERS["dave"])  # type: ignore[arg-type]
    )
    assert_decode_cleanly([*lab.sent, off.transfer_init, msg.transfer_init], tmp_path / "deferred.pcap")
