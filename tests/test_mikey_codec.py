"""MIKEY codec: round trips, strict decoding of every malformed input, a=key-mgmt."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.errors import MikeyError
from ue_agent.kms import mikey, sdp
from ue_agent.secret import Secret


def sample() -> mikey.Message:
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT,
        0xDEADBEEF,
        1,
        True,
        mikey.MAP_GENERIC_ID,
        (
            mikey.GenericCs(1, mikey.PROT_SRTP, (0,), bytes(8)),
            mikey.GenericCs(2, mikey.PROT_TLS, (1,), b"TCP/TLS/MSRP", b"\x01"),
        ),
    )
    kd = [
        mikey.KeyData(mikey.KEY_TGK, Secret(b"k" * 16)),
        mikey.KeyData(mikey.KEY_TEK_SALT, Secret(b"t" * 16), Secret(b"s" * 14), mikey.KV_SPI, (b"\x07",)),
        mikey.KeyData(mikey.KEY_TEK, Secret(b"u" * 16), None, mikey.KV_INTERVAL, (b"\x00" * 6, b"\xff" * 6)),
    ]
    return mikey.Message(
        hdr,
        [
            mikey.Timestamp(mikey.TS_NTP_UTC, 0x0123456789ABCDEF),
            mikey.TimestampRole(mikey.TS_ROLE_EXPIRY, mikey.TS_COUNTER, 7),
            mikey.Rand(bytes(16)),
            mikey.RandRole(mikey.RAND_ROLE_I, bytes(range(20))),
            mikey.Id(mikey.ID_URI, b"sip:a@b"),
            mikey.IdRole(mikey.ROLE_KMS, mikey.ID_NAI, b"kms.example"),
            mikey.TicketPolicy(
                mikey.TICKET_MIKEY_BASE, 1, 1, 1, mikey.F_D | mikey.F_O, [mikey.IdRole(2, 1, b"sip:b@c")]
            ),
            mikey.Ticket(
                mikey.TICKET_3GPP_BASE,
                7,
                9,
                0,
                mikey.F_I,
                [mikey.TimestampRole(3, mikey.TS_NTP_UTC_32, 5)],
                3,
                b"opaque",
                mikey.encode_chain([mikey.Verification(1, bytes(20)), mikey.Verification(1, bytes(20))]),
            ),
            mikey.SecurityPolicy(0, mikey.PROT_SRTP, ((0, b"\x01"), (11, b"\x0a"))),
            mikey.Kemac(mikey.ENCR_NULL, mikey.KeyData.encode_all(kd)),
            mikey.GeneralExt(mikey.EXT_DIVERT, b"x"),
            mikey.Error(mikey.ERR_UNSPECIFIED),
            mikey.Verification(mikey.MAC_HMAC_SHA1_160, bytes(20)),
        ],
    )


def test_round_trip_every_payload():
    raw = sample().encode()
    msg = mikey.Message.decode(raw)
    assert msg.encode() == raw
    assert msg.header.csb_id == 0xDEADBEEF and msg.header.v and msg.header.prf_func == 1
    kd = mikey.KeyData.decode_all(msg.one(mikey.Kemac).encr_data)
    assert (
        [k.key_type for k in kd] == [0, 3, 2] and kd[1].salt == b"s" * 14 and kd[2].kv_data[1] == b"\xff" * 6
    )
    assert msg.one(mikey.IdRole, mikey.ROLE_KMS).text == "kms.example"


def test_srtp_id_map_round_trip():
    hdr = mikey.Header(mikey.DT_PSK_INIT, 5, 0, False, mikey.MAP_SRTP_ID, (mikey.SrtpCs(0, 0x11223344, 9),))
    raw = mikey.Message(hdr, [mikey.Rand(bytes(16))]).encode()
    assert raw[:10] == bytes.fromhex("01 00 0b 00 00000005 01 00".replace(" ", ""))
    assert raw[10:19] == bytes.fromhex("00 11223344 00000009".replace(" ", ""))
    assert mikey.Message.decode(raw).header.cs_map == (mikey.SrtpCs(0, 0x11223344, 9),)


def test_every_truncation_is_malformed():
    raw = sample().encode()
    for n in range(len(raw)):
        with pytest.raises(MikeyError) as exc:
            mikey.Message.decode(raw[:n])
        assert exc.value.code in ("mikey.malformed", "mikey.unsupported")


def test_trailing_bytes_version_unknown_payload_lengths():
    raw = sample().encode()
    with pytest.raises(MikeyError, match="trailing") as e:
        mikey.Message.decode(raw + b"\x00")
    assert e.value.code == "mikey.malformed"
    with pytest.raises(MikeyError) as e:
        mikey.Message.decode(b"\x02" + raw[1:])
    assert e.value.code == "mikey.unsupported"
    with pytest.raises(MikeyError) as e:
        mikey.Message.decode(raw[:2] + b"\x63" + raw[3:])  # next payload 99
    assert e.value.code == "mikey.unsupported"
    long_rand = bytes.fromhex("01000b00000000010001") + b"\x00\x05abcd"  # RAND length 5, 4 octets
    with pytest.raises(MikeyError, match="truncated RAND") as e:
        mikey.Message.decode(long_rand)
    assert e.value.code == "mikey.malformed"
    with pytest.raises(MikeyError):
        mikey.Id(mikey.ID_URI, b"x" * (mikey.MAX_ID + 1)).body()
    with pytest.raises(MikeyError):
        mikey.Message.decode(b"\x01" * (mikey.MAX_MESSAGE + 1))


def test_key_data_secrets_stay_out_of_reprs():
    kd = mikey.KeyData(mikey.KEY_TGK, Secret(b"\xaa" * 16))
    assert "aa" not in repr(kd).lower() and "\\xaa" not in repr(kd)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_random_bytes_only_raises_mikey_errors(data):
    try:
        msg = mikey.Message.decode(data)
    except MikeyError as e:
        assert e.code in ("mikey.malformed", "mikey.unsupported")
    else:
        assert msg.encode() == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=40), st.integers(0, 255))
def test_decode_mutations_of_a_valid_message(noise, pos):
    raw = bytearray(sample().encode())
    i = pos % len(raw)
    raw[i : i + len(noise)] = noise
    try:
        msg = mikey.Message.decode(bytes(raw))
    except MikeyError:
        return
    assert msg.encode() == bytes(raw)


ids = st.binary(min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    csb=st.integers(0, 2**32 - 1),
    prf=st.integers(0, 127),
    ssrcs=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=5
    ),
    rand=st.binary(min_size=16, max_size=64),
    idr=st.lists(st.tuples(st.integers(0, 255), st.sampled_from([0, 1]), ids), max_size=4),
    ticket=st.binary(min_size=1, max_size=200),
    ts=st.integers(0, 2**64 - 1),
)
def test_encode_decode_round_trip_property(csb, prf, ssrcs, rand, idr, ticket, ts):
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT, csb, prf, True, mikey.MAP_SRTP_ID, tuple(mikey.SrtpCs(*s) for s in ssrcs)
    )
    payloads = [mikey.Timestamp(mikey.TS_NTP_UTC, ts), mikey.RandRole(1, rand)]
    payloads += [mikey.IdRole(r, t, d) for r, t, d in idr]
    payloads.append(mikey.Ticket(1, 1, 1, prf, 0, [], 0, ticket))
    msg = mikey.Message(hdr, payloads)
    again = mikey.Message.decode(msg.encode())
    assert again == msg


def test_key_mgmt_attribute():
    raw = sample().encode()
    line = sdp.build(raw)
    assert line.startswith("a=key-mgmt:mikey ")
    assert sdp.parse(line) == raw and sdp.parse(line[2:]) == raw
    assert sdp.find(f"v=0\r\n{line}\r\nm=audio 4000 RTP/SAVP 0\r\n") == [raw]
    with pytest.raises(MikeyError) as e:
        sdp.parse("a=key-mgmt:mikey !!notbase64")
    assert e.value.code == "mikey.malformed"
    with pytest.raises(MikeyError) as e:
        sdp.parse("a=key-mgmt:kerberos AAAA")
    assert e.value.code == "mikey.unsupported"
    with pytest.raises(MikeyError):
        sdp.parse("a=key-mgmt:mikey")
