"""TS 33.220 Annex B KDF. No official Ks_NAF vector exists; the values here are recomputed
from the formula in a second, independent way (plain hashlib over a hand-built S)."""

import hashlib
import hmac

from ue_agent.crypto.kdf import UA_HTTP_DIGEST, UA_KMS, kdf_input, ks_int_naf, ks_naf, naf_id

KS = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cbf769bcd751044604127672711c6d3441")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
IMPI = "user1_private@home1.net"


def test_s_layout_matches_the_digest():
    s = kdf_input(1, b"gba-me", RAND, IMPI, naf_id("naf1.home1.net", UA_HTTP_DIGEST))
    assert s.hex() == (
        "016762612d6d65000623553cbe9637a89d218ae64dae47bf35001075736572315f7072697661746540"
        "686f6d65312e6e657400176e6166312e686f6d65312e6e657401000000020013"
    )


def test_ks_naf_and_ks_int_naf():
    nid = naf_id("naf1.home1.net", UA_HTTP_DIGEST)
    assert ks_naf(KS, RAND, IMPI, nid).hex() == (
        "7c351b69c4910d2da5a312ad73ce3ac7be6f46165fdb9ffc3494d874aca8a501"
    )
    assert ks_int_naf(KS, RAND, IMPI, nid).hex() == (
        "dc1ceb72700b7c0e17c8eac76838f8bafb134885011e713f782bfca16a2df691"
    )


def test_kms_naf_id_second_computation():
    fqdn = "kms.ims.mnc001.mcc001.3gppnetwork.org"
    nid = naf_id(fqdn, UA_KMS)
    assert nid == fqdn.encode() + b"\x01\x00\x00\x00\x06"
    s = (
        b"\x01"
        + b"gba-me"
        + b"\x00\x06"
        + RAND
        + b"\x00\x10"
        + IMPI.encode()
        + bytes([0, len(IMPI)])
        + nid
        + len(nid).to_bytes(2, "big")
    )
    assert ks_naf(KS, RAND, IMPI, nid) == hmac.new(KS, s, hashlib.sha256).digest()


def test_naf_fqdn_enters_the_kdf_as_given():
    # TS 33.220 Annex H / B.3: NAF_Id = FQDN of the NAF || Ua security protocol identifier, and
    # P1 = NAF_Id in Ks_NAF = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id): the FQDN is taken as given.
    mixed = "KMS.Ims.Example.org"
    nid = naf_id(mixed, UA_KMS)
    assert nid == b"KMS.Ims.Example.org" + b"\x01\x00\x00\x00\x06"
    want = hmac.new(
        KS,
        b"\x01"
        + b"gba-me"
        + b"\x00\x06"
        + RAND
        + b"\x00\x10"
        + IMPI.encode()
        + bytes([0, len(IMPI)])
        + nid
        + len(nid).to_bytes(2, "big"),
        hashlib.sha256,
    ).digest()
    assert ks_naf(KS, RAND, IMPI, nid) == want
    assert ks_naf(KS, RAND, IMPI, naf_id(mixed.lower(), UA_KMS)) != want
