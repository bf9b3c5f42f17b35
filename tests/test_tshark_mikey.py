"""Wireshark's MIKEY dissector (tshark) reads every message the agents exchange, over UDP and in SDP.

The installed dissector may not know every MIKEY-TICKET number (tshark 4.0 knows neither data
types 11-18, the GENERIC-ID map, nor the TR/RANDR/TP/TICKET payloads nor the 256-bit
algorithms). What it knows is read from ``tshark -G values``; each message is then shown to it
(1) as far as it can follow it: the header (an unknown map replaced by the empty one) and the
payloads up to the first one it does not know, and (2) payload by payload, every payload it
knows (HDR, T, RAND, IDR, KEMAC, V, SP, ERR) behind a header. tshark must report no malformed
packet and no expert error or warning, and must read back the values we wrote. The same views
go once more inside ``a=key-mgmt:mikey`` lines of SIP INVITEs (RFC 4567), through its SDP dissector.
"""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ue_agent.kms import mikey, sdp, service, session
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.secret import Secret

pytestmark = pytest.mark.skipif(
    shutil.which("tshark") is None, reason="tshark is not installed (scripts/setup)"
)

KMS_ID = "kms.ims.example.org"
USERS = {n: f"sip:{n}@ims.example.org" for n in ("alice", "bob", "carol")}
MIKEY_PORT = 2269  # tshark's default for MIKEY over UDP
SIP_PORT = 5060


def _tshark(*args: str) -> str:
    env = {**os.environ, "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def knowledge() -> dict[str, set[int]]:
    """The values the installed dissector names, per field."""
    want = {
        "mikey.next_payload",
        "mikey.cs_id_map_type",
        "mikey.v.auth_alg",
        "mikey.kemac.encr_alg",
        "mikey.kemac.mac_alg",
        "mikey.t.ts_type",
        "mikey.id.type",
    }
    out: dict[str, set[int]] = {k: set() for k in want}
    for line in _tshark("-G", "values").splitlines():
        parts = line.split("\t")
        if len(parts) >= 4 and parts[0] == "V" and parts[1] in want and parts[2].isdigit():
            out[parts[1]].add(int(parts[2]))
    return out


def payload_known(p: mikey.Payload, k: dict[str, set[int]]) -> bool:
    if p.TYPE not in k["mikey.next_payload"] or isinstance(p, mikey.GeneralExt):
        return False
    if isinstance(p, mikey.Verification):
        return p.mac_alg in k["mikey.v.auth_alg"]
    if isinstance(p, mikey.Kemac):
        return p.encr_alg in k["mikey.kemac.encr_alg"] and p.mac_alg in k["mikey.kemac.mac_alg"]
    if isinstance(p, mikey.Timestamp):
        return p.ts_type in k["mikey.t.ts_type"]
    if isinstance(p, mikey.IdRole):
        return p.id_type in k["mikey.id.type"]
    return True


def _header(h: mikey.Header, k: dict[str, set[int]]) -> mikey.Header:
    if h.cs_map_type in k["mikey.cs_id_map_type"] or not h.cs_map:
        return mikey.Header(h.data_type, h.csb_id, h.prf_func, h.v, h.cs_map_type, h.cs_map)
    return mikey.Header(h.data_type, h.csb_id, h.prf_func, h.v, mikey.MAP_EMPTY)


def views(raw: bytes, k: dict[str, set[int]]) -> list[tuple[mikey.Message, list[mikey.Payload]]]:
    """(message to show, payloads whose values tshark must read back)."""
    msg = mikey.Message.decode(raw)
    hdr = _header(msg.header, k)
    prefix: list[mikey.Payload] = []
    for p in msg.payloads:
        if p.TYPE not in k["mikey.next_payload"]:
            break
        prefix.append(p)
        if not payload_known(p, k):  # the dissector cannot size it: stop after it
            break
    out = [(mikey.Message(hdr, prefix), [p for p in prefix if payload_known(p, k)])]
    inner: list[mikey.Payload] = []
    for t in msg.all(mikey.Ticket):  # the payloads of MIKEY base ticket data (RFC 6043 A) too
        if t.ticket_type == mikey.TICKET_MIKEY_BASE:
            inner += mikey.decode_base_ticket(t.ticket_data)[1]
    out += [(mikey.Message(hdr, [p]), [p]) for p in msg.payloads + inner if payload_known(p, k)]
    return out


def _frame(i: int, dport: int, data: bytes) -> bytes:
    udp = struct.pack(">HHHH", 40000 + i % 1000, dport, 8 + len(data), 0) + data
    ip = struct.pack(
        ">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\2"
    )
    s = sum(struct.unpack(">10H", ip))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    ip = ip[:10] + struct.pack(">H", ~s & 0xFFFF) + ip[12:]
    return b"\0" * 12 + b"\x08\x00" + ip + udp


def write_pcap(path: Path, frames: list[tuple[int, bytes]]) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # Ethernet
    for i, (port, data) in enumerate(frames):
        f = _frame(i, port, data)
        out += struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f
    path.write_bytes(bytes(out))


def sip_invite(line: str) -> bytes:
    body = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"{line}\r\nm=audio 4000 RTP/SAVP 0\r\n"
    )
    head = (
        "INVITE sip:bob@ims.example.org SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:alice@ims.example.org>;tag=1\r\nTo: <sip:bob@ims.example.org>\r\n"
        "Call-ID: 1@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return (head + body).encode()


FIELDS = [
    "frame.number",
    "_ws.expert.severity",
    "_ws.malformed",
    "mikey.next_payload",
    "mikey.csb_id",
    "mikey.id.role",
    "mikey.id.data",
    "mikey.kemac.key_data",
    "mikey.v.ver_data",
    "mikey.sp.no",
    "mikey.err.no",
    "mikey.rand.data",
    "mikey.t.ts_type",
    "sdp.key_mgmt.kmpid",
    "sdp.key_mgmt.data",
]


def dissect(path: Path) -> list[dict[str, list[str]]]:
    args = ["-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=|"]
    for f in FIELDS:
        args += ["-e", f]
    rows = []
    for line in _tshark(*args).splitlines():
        cols = line.split("\t")
        if len(cols) != len(FIELDS):
            continue
        rows.append({f: [v for v in c.split("|") if v] for f, c in zip(FIELDS, cols, strict=True)})
    return rows


def expect(msg: mikey.Message, check: list[mikey.Payload]) -> dict[str, list[str]]:
    """What tshark must read from the message (values of the payloads it knows)."""
    e: dict[str, list[str]] = {"mikey.csb_id": [f"0x{msg.header.csb_id:08x}"]}
    chain = [p.TYPE for p in msg.payloads] + [0]
    e["mikey.next_payload"] = [str(t) for t in chain]
    for p in check:
        if isinstance(p, mikey.IdRole):
            e.setdefault("mikey.id.role", []).append(str(p.role))
            e.setdefault("mikey.id.data", []).append(p.data.decode())
        elif isinstance(p, mikey.Kemac):
            e.setdefault("mikey.kemac.key_data", []).append(p.encr_data.hex())
        elif isinstance(p, mikey.Verification):
            e.setdefault("mikey.v.ver_data", []).append(p.mac.hex())
        elif isinstance(p, mikey.SecurityPolicy):
            e.setdefault("mikey.sp.no", []).append(str(p.policy_no))
        elif isinstance(p, mikey.Error):
            e.setdefault("mikey.err.no", []).append(str(p.error_no))
        elif isinstance(p, mikey.Rand):
            e.setdefault("mikey.rand.data", []).append(p.rand.hex())
        elif isinstance(p, mikey.Timestamp):
            e.setdefault("mikey.t.ts_type", []).append(str(p.ts_type))
    return e


# ---------------------------------------------------------------------------- the messages


class Lab:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0
        self.psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in USERS}
        self.kms = service.KmsService(
            KMS_ID,
            lambda idr: self.psk.get(idr.decode()[5:]) if idr else None,
            lambda idr: [USERS[idr.decode()[5:]]] if idr else [],
            clock=lambda: self.now,
        )
        self.sent: list[bytes] = []

    def kms_call(self, raw: bytes) -> bytes:
        body = self.kms.handle(raw)
        self.sent += [raw, body]
        return body

    def call(self, prf: int, group: bool) -> None:
        a, b, c = USERS["alice"], USERS["bob"], USERS["carol"]
        req = session.build_request_init(
            a, [b, c], "btid-alice", self.psk["alice"], KMS_ID, now=self.now, group=group, prf_func=prf
        )
        issued = session.read_request_resp(200, self.kms_call(req.raw), req, self.psk["alice"], KMS_ID)
        offer = session.build_transfer_init(issued, a, b, [SrtpStream(ssrc=7), TlsStream()], KMS_ID, self.now)
        self.sent.append(offer.transfer_init)
        self.sent.append(session.transfer_error(offer.transfer_init, mikey.ERR_INVALID_TS, self.now) or b"")
        ti = session.inspect_transfer_init(offer.transfer_init)
        for who in ("bob", "carol"):  # forked (or group) answers
            rs = session.build_resolve_init(
                USERS[who], ti, f"btid-{who}", self.psk[who], KMS_ID, now=self.now, prf_func=prf
            )
            resolved = session.read_resolve_resp(200, self.kms_call(rs.raw), rs, self.psk[who], KMS_ID)
            resp, _ = session.accept_transfer_init(ti, resolved, USERS[who], session.ReplayCache(), self.now)
            self.sent.append(resp)
            session.complete(offer, resp, self.now)
        # refusals: an Error message signed under the request's key, and one that is not
        bad = session.build_request_init(
            b, ["*"], "btid-alice", self.psk["alice"], KMS_ID, now=self.now, prf_func=prf
        )
        self.kms_call(bad.raw)
        self.sent.append(self.kms.handle(b"\x01\x0b\x00\x01garbage"))  # the unsigned Error only


@pytest.fixture(scope="module")
def exchanged() -> list[bytes]:
    lab = Lab()
    for prf in (mikey.PRF_HMAC_SHA_256, mikey.PRF_MIKEY_1):
        for group in (False, True):
            lab.call(prf, group)
    return lab.sent


def test_tshark_knows_mikey():
    assert "mikey" in _tshark("-G", "protocols").lower()


def assert_decode_cleanly(messages: list[bytes], pcap: Path) -> set[str]:
    """Each message's views (:func:`views`) over UDP in ``pcap``: tshark reports no malformed
    packet or expert error and reads back our values. Returns the payload types checked."""
    k = knowledge()
    frames: list[tuple[int, bytes]] = []
    wanted: list[dict[str, list[str]]] = []
    checked: set[str] = set()
    for raw in messages:
        for msg, check in views(raw, k):
            frames.append((MIKEY_PORT, msg.encode()))
            wanted.append(expect(msg, check))
            checked |= {type(p).__name__ for p in check}
    write_pcap(pcap, frames)
    rows = dissect(pcap)
    assert len(rows) == len(frames)
    for i, (row, want) in enumerate(zip(rows, wanted, strict=True)):
        assert not row["_ws.expert.severity"] and not row["_ws.malformed"], (i, row)
        for f, values in want.items():
            assert row[f] == values, (i, f, row[f], values)
    return checked


def test_every_exchanged_message_decodes_cleanly_in_tshark(exchanged, tmp_path):
    checked = assert_decode_cleanly(exchanged, tmp_path / "mikey.pcap")
    # every payload type the dissector knows was read back from our messages at least once
    assert {"IdRole", "Kemac", "Verification", "SecurityPolicy", "Error", "Timestamp", "Rand"} <= checked


def test_key_mgmt_in_sdp_decodes_cleanly_in_tshark(exchanged, tmp_path):
    k = knowledge()
    frames: list[tuple[int, bytes]] = []
    shown: list[bytes] = []
    transfer = [r for r in exchanged if r[1] in (mikey.DT_TRANSFER_INIT, mikey.DT_TRANSFER_RESP)]
    for raw in transfer:
        for msg, _ in views(raw, k)[:1]:
            data = msg.encode()
            line = sdp.build(data)
            assert sdp.parse(line) == data
            frames.append((SIP_PORT, sip_invite(line)))
            shown.append(data)
    pcap = tmp_path / "sip.pcap"
    write_pcap(pcap, frames)
    rows = dissect(pcap)
    assert len(rows) == len(frames)
    for row, data in zip(rows, shown, strict=True):
        assert not row["_ws.expert.severity"] and not row["_ws.malformed"], row
        assert row["sdp.key_mgmt.kmpid"] == ["mikey"]
        got = row["sdp.key_mgmt.data"][0].replace(":", "")
        assert got in (data.hex(), base64.b64encode(data).hex(), base64.b64encode(data).decode()), got[:40]
        assert row["mikey.csb_id"] == [f"0x{int.from_bytes(data[4:8], 'big'):08x}"]
