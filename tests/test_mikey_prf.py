"""MIKEY PRF and key derivation (RFC 3830 4.1.2-4.1.3; PRF-HMAC-SHA-256 of RFC 6043 6.1): recorded
worked-example values and a second, independent computation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ue_agent.crypto import mikey_prf

TGK = bytes(range(16))
RAND = bytes(range(16, 32))
CSB = 0x01020304


def test_digest_example_values():
    assert mikey_prf.tek(TGK, 1, CSB, RAND, 16).hex() == "a488dab36184e8d41ae26cb6daf5405e"
    assert mikey_prf.salt(TGK, 1, CSB, RAND, 14).hex() == "bfd77adf6b9118d13fffbcd4b407"
    assert mikey_prf.tek(TGK, 1, CSB, RAND, 16, 1).hex() == "78ad3c8cad451c5ffc24e9851a0f1a51"


def _hmac(hashname: str, key: bytes, msg: bytes) -> bytes:
    """HMAC written out from RFC 2104 (not the hmac module)."""
    h = getattr(hashlib, hashname)
    block = h().block_size
    if len(key) > block:
        key = h(key).digest()
    key = key.ljust(block, b"\0")
    inner = h(bytes(k ^ 0x36 for k in key) + msg).digest()
    return h(bytes(k ^ 0x5C for k in key) + inner).digest()


def _reference_prf(inkey: bytes, label: bytes, n: int, hashname: str) -> bytes:
    chunks = [inkey[i : i + 32] for i in range(0, len(inkey), 32)]
    out = 0
    for s in chunks:
        a, stream = label, b""
        while len(stream) < n:
            a = _hmac(hashname, s, a)
            stream += _hmac(hashname, s, a + label)
        out ^= int.from_bytes(stream[:n], "big")
    return out.to_bytes(n, "big")


@settings(max_examples=60, deadline=None)
@given(
    inkey=st.binary(min_size=1, max_size=100),
    label=st.binary(min_size=0, max_size=60),
    n=st.integers(min_value=1, max_value=90),
    func=st.sampled_from([(0, "sha1"), (1, "sha256")]),
)
def test_prf_matches_independent_computation(inkey, label, n, func):
    assert mikey_prf.prf(inkey, label, n, func[0]) == _reference_prf(inkey, label, n, func[1])


def test_chunk_boundaries_have_no_empty_chunk():
    # 32 and 64 octets: exactly one and two chunks (minisip fed a third, empty one)
    for size in (32, 64):
        key = bytes(range(size))
        assert mikey_prf.prf(key, b"L", 20) == _reference_prf(key, b"L", 20, "sha1")


def test_transport_keys_use_cs_id_ff_and_their_constants():
    e, s, a = mikey_prf.transport_keys(TGK, CSB, RAND)
    assert e == _reference_prf(TGK, bytes.fromhex("150533e1ff01020304") + RAND, 16, "sha1")
    assert s == _reference_prf(TGK, bytes.fromhex("29b88916ff01020304") + RAND, 14, "sha1")
    assert a == _reference_prf(TGK, bytes.fromhex("2d22ac75ff01020304") + RAND, 20, "sha1")


def test_bad_arguments():
    with pytest.raises(ValueError):
        mikey_prf.prf(b"", b"x", 16)
    with pytest.raises(ValueError):
        mikey_prf.prf(b"k", b"x", 16, prf_func=7)
    with pytest.raises(ValueError):
        mikey_prf.label(0, 256, 0, b"")
