"""Milenage against TS 35.207/35.208 test sets 1-6, the sysmoISIM-SJA5 card vector and the
AUTS resynchronisation round trip (TS 35.208 4.3.1-4.3.6; TS 33.102 6.3.3 and 6.3.5 for AUTS;
the card vector from osmocom/pysim tests/pySim-shell_test/authenticate/)."""

from __future__ import annotations

import pytest

from ue_agent.crypto.milenage import Milenage, gsm_kc, gsm_sres, opc_from_op

# K, RAND, SQN, AMF, OP, OPc, f1, f1*, f2, f3, f4, f5, f5* (TS 35.208 4.3.1-4.3.6)
TEST_SETS = {
    1: (
        "465b5ce8b199b49faa5f0a2ee238a6bc",
        "23553cbe9637a89d218ae64dae47bf35",
        "ff9bb4d0b607",
        "b9b9",
        "cdc202d5123e20f62b6d676ac72cb318",
        "cd63cb71954a9f4e48a5994e37a02baf",
        "4a9ffac354dfafb3",
        "01cfaf9ec4e871e9",
        "a54211d5e3ba50bf",
        "b40ba9a3c58b2a05bbf0d987b21bf8cb",
        "f769bcd751044604127672711c6d3441",
        "aa689c648370",
        "451e8beca43b",
    ),
    2: (
        "0396eb317b6d1c36f19c1c84cd6ffd16",
        "c00d603103dcee52c4478119494202e8",
        "fd8eef40df7d",
        "af17",
        "ff53bade17df5d4e793073ce9d7579fa",
        "53c15671c60a4b731c55b4a441c0bde2",
        "5df5b31807e258b0",
        "a8c016e51ef4a343",
        "d3a628ed988620f0",
        "58c433ff7a7082acd424220f2b67c556",
        "21a8c1f929702adb3e738488b9f5c5da",
        "c47783995f72",
        "30f1197061c1",
    ),
    3: (
        "fec86ba6eb707ed08905757b1bb44b8f",
        "9f7c8d021accf4db213ccff0c7f71a6a",
        "9d0277595ffc",
        "725c",
        "dbc59adcb6f9a0ef735477b7fadf8374",
        "1006020f0a478bf6b699f15c062e42b3",
        "9cabc3e99baf7281",
        "95814ba2b3044324",
        "8011c48c0c214ed2",
        "5dbdbb2954e8f3cde665b046179a5098",
        "59a92d3b476a0443487055cf88b2307b",
        "33484dc2136b",
        "deacdd848cc6",
    ),
    4: (
        "9e5944aea94b81165c82fbf9f32db751",
        "ce83dbc54ac0274a157c17f80d017bd6",
        "0b604a81eca8",
        "9e09",
        "223014c5806694c007ca1eeef57f004f",
        "a64a507ae1a2a98bb88eb4210135dc87",
        "74a58220cba84c49",
        "ac2cc74a96871837",
        "f365cd683cd92e96",
        "e203edb3971574f5a94b0d61b816345d",
        "0c4524adeac041c4dd830d20854fc46b",
        "f0b9c08ad02e",
        "6085a86c6f63",
    ),
    5: (
        "4ab1deb05ca6ceb051fc98e77d026a84",
        "74b0cd6031a1c8339b2b6ce2b8c4a186",
        "e880a1b580b6",
        "9f07",
        "2d16c5cd1fdf6b22383584e3bef2a8d8",
        "dcf07cbd51855290b92a07a9891e523e",
        "49e785dd12626ef2",
        "9e85790336bb3fa2",
        "5860fc1bce351e7e",
        "7657766b373d1c2138f307e3de9242f9",
        "1c42e960d89b8fa99f2744e0708ccb53",
        "31e11a609118",
        "fe2555e54aa9",
    ),
    6: (
        "6c38a116ac280c454f59332ee35c8c4f",
        "ee6466bc96202c5a557abbeff8babf63",
        "414b98222181",
        "4464",
        "1ba00a1a7c6700ac8c3ff3e96ad08725",
        "3803ef5363b947c6aaa225e58fae3934",
        "078adfb488241a57",
        "80246b8d0186bcf1",
        "16c8233f05a0ac28",
        "3f8c7587fe8e4b233af676aede30ba3b",
        "a7466cc1e6b2a1337d49d3b66e95d7b4",
        "45b0f69ab06c",
        "1f53cd2b1113",
    ),
}


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@pytest.mark.parametrize("number", sorted(TEST_SETS))
def test_official_test_set(number: int) -> None:
    k, rand, sqn, amf, op, opc, f1, f1s, f2, f3, f4, f5, f5s = map(h, TEST_SETS[number])
    assert opc_from_op(k, op) == opc
    m = Milenage(k, opc)
    assert m.f1(rand, sqn, amf) == (f1, f1s)
    assert m.f2345(rand) == (f2, f3, f4, f5, f5s)
    v = m.vector(rand, sqn, amf)
    assert (v.mac_a, v.mac_s, v.res, v.ck, v.ik, v.ak, v.ak_star) == (f1, f1s, f2, f3, f4, f5, f5s)
    assert m.generate_autn(rand, sqn, amf) == bytes(a ^ b for a, b in zip(sqn, f5, strict=True)) + amf + f1


def test_test_set_1_autn_and_gsm_conversions() -> None:
    k, rand, sqn, amf, _op, opc, *_ = map(h, TEST_SETS[1])
    m = Milenage(k, opc)
    assert m.generate_autn(rand, sqn, amf).hex() == "55f328b43577b9b94a9ffac354dfafb3"
    res, ck, ik, _, _ = m.f2345(rand)
    # TS 55.205 GSM-Milenage set 1: SRES (c2 over the 3G RES) and Kc (c3)
    assert gsm_sres(res).hex() == "46f8416a"
    assert gsm_kc(ck, ik).hex() == "eae4be823af9a08b"


def test_sysmoisim_sja5_card_vector() -> None:
    """pySim's real-card answer (tests/pySim-shell_test/authenticate/auth_result.ok): the card holds OP,
    not OPc (pySim/sysmocom_sja2.py, EF_USIM_AUTH_KEY)."""
    k, op = h("56c3a6da347ae7e43c69d37576725d81"), h("e0012b514f84eca9bfd6182bee345e2c")
    rand, autn = h("e85b2b7fe58f0e6239b32543d3e3259a"), h("7928ea47ae090000ca8ab1f93c7cb03a")
    opc = opc_from_op(k, op)
    assert opc.hex() == "b54aa2ed5fb981dd3d544c1fe3e36b6f"
    m = Milenage(k, opc)
    res, ck, ik, ak, _ = m.f2345(rand)
    sqn = bytes(a ^ b for a, b in zip(autn[:6], ak, strict=True))
    assert sqn.hex() == "000000000020" and autn[6:8] == b"\x00\x00"
    assert m.f1(rand, sqn, autn[6:8])[0] == autn[8:]
    assert m.generate_autn(rand, sqn, b"\x00\x00") == autn
    assert res.hex() == "13484811d553ab35"
    assert ck.hex() == "0f93c4807f4ff57c6cd348fea590c06d"
    assert ik.hex() == "608e7bff4856c73e363e795b165a4158"
    assert gsm_kc(ck, ik).hex() == "35f08eda84d3b377"


def test_auts_example_and_resync_round_trip() -> None:
    k, rand, _sqn, _amf, _op, opc, *_ = map(h, TEST_SETS[1])
    m = Milenage(k, opc)
    auts = m.auts(rand, h("000000000123"))
    assert auts.hex() == "451e8beca518598d5a02643b444b"
    assert m.resync_sqn(rand, auts) == h("000000000123")


def test_resync_rejects_bad_auts() -> None:
    k, rand, _sqn, _amf, _op, opc, *_ = map(h, TEST_SETS[1])
    m = Milenage(k, opc)
    auts = bytearray(m.auts(rand, h("000000000123")))
    auts[-1] ^= 1
    assert m.resync_sqn(rand, bytes(auts)) is None
    assert m.resync_sqn(rand, bytes(auts[:13])) is None
    other = Milenage(*map(h, (TEST_SETS[2][0], TEST_SETS[2][5])))
    assert other.resync_sqn(rand, m.auts(rand, h("000000000123"))) is None


def test_bad_lengths_are_errors() -> None:
    with pytest.raises(ValueError):
        Milenage(b"\x00" * 15, b"\x00" * 16)
    m = Milenage(b"\x00" * 16, b"\x00" * 16)
    with pytest.raises(ValueError):
        m.f2345(b"\x00" * 15)
    with pytest.raises(ValueError):
        m.f1(b"\x00" * 16, b"\x00" * 5, b"\x00\x00")
    assert "00" not in repr(m.vector(b"\x00" * 16, b"\x00" * 6, b"\x00\x00"))
