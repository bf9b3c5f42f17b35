"""SRTP key derivation: RFC 3711 B.2/B.3 and RFC 6188 §7.2 byte for byte, and libsrtp agreement."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ue_agent.crypto import srtp_kdf
from ue_agent.errors import MediaError
from ue_agent.secret import Secret

H = bytes.fromhex

# RFC 3711 Appendix B.2 (AES-CM keystream)
B2_KEY = H("2B7E151628AED2A6ABF7158809CF4F3C")
B2_IV = H("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
B2_STREAM = H(
    "E03EAD0935C95E80E166B16DD92B4EB4D23513162B02D0F72A43A2FE4A5F97AB41E95B3BB0A2E8DD477901E4FCA894C0"
)

# RFC 3711 Appendix B.3 (key derivation)
B3_MASTER_KEY = H("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_MASTER_SALT = H("0EC675AD498AFEEBB6960B3AABE6")
B3_CIPHER_KEY = H("C61E7A93744F39EE10734AFE3FF7A087")
B3_CIPHER_SALT = H("30CBBC08863D8C85D49DB34A9AE1")
B3_AUTH_KEY_94 = H(
    "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE"
    "E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25"
    "6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"
)

# RFC 6188 §7.2 (AES-256 PRF)
R6188_MASTER_KEY = H("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6")
R6188_MASTER_SALT = H("3b04803de51ee7c96423ab5b78d2")
R6188_CIPHER_KEY = H("5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4")
R6188_CIPHER_SALT = H("fa31791685ca444a9e07c6c64e93")
R6188_AUTH_KEY = H("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")


def test_rfc3711_b2_keystream() -> None:
    assert srtp_kdf.aes_cm_keystream(B2_KEY, B2_IV, len(B2_STREAM)) == B2_STREAM


def test_rfc3711_b3_session_keys() -> None:
    k = srtp_kdf.session_keys(B3_MASTER_KEY, B3_MASTER_SALT)
    assert k.encryption == B3_CIPHER_KEY
    assert k.salt == B3_CIPHER_SALT
    assert k.auth == B3_AUTH_KEY_94[:20]


def test_rfc3711_b3_long_auth_keystream() -> None:
    """The appendix prints 94 octets of the auth-label keystream."""
    out = srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, srtp_kdf.LABEL_SRTP_AUTH, len(B3_AUTH_KEY_94))
    assert out == B3_AUTH_KEY_94


def test_rfc6188_aes256_session_keys() -> None:
    k = srtp_kdf.session_keys(Secret(R6188_MASTER_KEY), Secret(R6188_MASTER_SALT))
    assert k.encryption == R6188_CIPHER_KEY
    assert k.salt == R6188_CIPHER_SALT
    assert k.auth == R6188_AUTH_KEY


def test_srtcp_labels_differ_from_srtp() -> None:
    rtp = srtp_kdf.session_keys(B3_MASTER_KEY, B3_MASTER_SALT)
    rtcp = srtp_kdf.session_keys(B3_MASTER_KEY, B3_MASTER_SALT, rtcp=True)
    assert rtcp.encryption != rtp.encryption and rtcp.auth != rtp.auth and rtcp.salt != rtp.salt
    assert rtcp.encryption == srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, 3, 16)


def test_kdr_changes_keys_per_interval() -> None:
    a = srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16, index=0, kdr=2**16)
    b = srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16, index=2**16 - 1, kdr=2**16)
    c = srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, 0, 16, index=2**16, kdr=2**16)
    assert a == b == B3_CIPHER_KEY
    assert c != a


@pytest.mark.parametrize(
    "kwargs",
    [
        {"label": 256},
        {"index": 2**48},
        {"kdr": 3},
        {"kdr": 2**25},
    ],
)
def test_bad_parameters(kwargs: dict) -> None:
    args = {"label": 0, "length": 16, "index": 0, "kdr": 0} | kwargs
    with pytest.raises(MediaError) as e:
        srtp_kdf.derive(B3_MASTER_KEY, B3_MASTER_SALT, **args)
    assert e.value.code == "media.bad_key"


def test_bad_lengths() -> None:
    with pytest.raises(MediaError):
        srtp_kdf.session_keys(B3_MASTER_KEY, B3_MASTER_SALT[:13])
    with pytest.raises(MediaError):
        srtp_kdf.session_keys(B3_MASTER_KEY[:15], B3_MASTER_SALT)
    with pytest.raises(MediaError):
        srtp_kdf.aes_cm_keystream(B2_KEY, B2_IV[:15], 16)


# -- agreement with libsrtp: what we hand over is what libsrtp derives -------------------------------

pylibsrtp = pytest.importorskip("pylibsrtp", reason="pylibsrtp is not installed")

SSRC = 0xCAFEBABE
SEQ = 0x1234


def _rtp(payload: bytes, seq: int = SEQ) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x0F, seq, 0xDECAFBAD, SSRC) + payload


def _protect(profile: int, key: bytes, packet: bytes) -> bytes:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    return pylibsrtp.Session(policy=policy).protect(packet)


@pytest.mark.parametrize("tag_len", [10, 4])
def test_aes_cm_packet_matches_libsrtp(tag_len: int) -> None:
    profile = (
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
        if tag_len == 10
        else pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32
    )
    payload = bytes(range(40))
    srtp = _protect(profile, B3_MASTER_KEY + B3_MASTER_SALT, _rtp(payload))
    k = srtp_kdf.session_keys(B3_MASTER_KEY, B3_MASTER_SALT)
    iv = srtp_kdf.aes_cm_packet_iv(k.salt.reveal(), SSRC, SEQ)
    stream = srtp_kdf.aes_cm_keystream(k.encryption.reveal(), iv, len(payload))
    body = srtp[12:-tag_len]
    assert bytes(a ^ b for a, b in zip(body, stream, strict=True)) == payload
    mac = hmac.HMAC(k.auth.reveal(), hashes.SHA1())
    mac.update(srtp[:-tag_len] + (0).to_bytes(4, "big"))  # authenticated portion || ROC
    assert mac.finalize()[:tag_len] == srtp[-tag_len:]


@pytest.mark.parametrize("klen", [16, 32])
def test_gcm_packet_matches_libsrtp(klen: int) -> None:
    """RFC 7714: our KDF with a 12-byte master salt gives libsrtp's session key and salt."""
    profile = (
        pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
        if klen == 16
        else pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    )
    master_key = bytes(range(1, klen + 1))
    master_salt = bytes(range(0xA0, 0xAC))
    payload = b"ue-agent gcm" * 3
    srtp = _protect(profile, master_key + master_salt, _rtp(payload))
    k = srtp_kdf.session_keys(master_key, master_salt)
    assert len(k.salt) == 12 and len(k.auth) == 0
    iv = srtp_kdf.gcm_packet_iv(k.salt.reveal(), SSRC, SEQ)
    plain = AESGCM(k.encryption.reveal()).decrypt(iv, srtp[12:], srtp[:12])
    assert plain == payload
