"""TLS-PSK keys (RFC 4279): validation, and real handshakes between openssl peers keyed from TlsPskKeys."""

from __future__ import annotations

import base64

import pytest

from tests.helpers_openssl import OPENSSL, PskServer, psk_client
from ue_agent.errors import MediaError
from ue_agent.media import tls_psk
from ue_agent.media.keys import StreamKeys, TlsPskKeys
from ue_agent.media.store import KeyStore
from ue_agent.secret import Secret

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")

needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


# -- validation ----------------------------------------------------------------------------------------


def test_valid_keys() -> None:
    k = tls_psk.tls_psk_keys("msrp@ue-a.ims.example.org", KEY)
    assert isinstance(k, TlsPskKeys) and isinstance(k.key, Secret) and k.key == KEY
    assert tls_psk.tls_psk_keys(b"bfcp-\xe2\x82\xac", Secret(bytes(32))).identity == "bfcp-€"
    assert tls_psk.interop_warnings(k) == []
    long_id = tls_psk.tls_psk_keys("x" * 129, KEY)
    assert tls_psk.interop_warnings(long_id) == ["identity longer than 128 octets"]
    assert tls_psk.check_identity("é" * 32767)  # 65534 octets


@pytest.mark.parametrize(
    "identity",
    ["", "x" * 65536, "é" * 32768, "a\nb", "nul\x00", "\x85", b"\xff\xfe", 5, "\udc80"],
)
def test_bad_identities(identity: object) -> None:
    with pytest.raises(MediaError) as e:
        tls_psk.check_identity(identity)  # type: ignore[arg-type]
    assert e.value.code == "media.tls_psk_identity"


@pytest.mark.parametrize("length", [0, 8, 15, 65])
def test_bad_key_lengths(length: int) -> None:
    with pytest.raises(MediaError) as e:
        tls_psk.tls_psk_keys("id", bytes(length))
    assert e.value.code == "media.tls_psk_key"
    assert "00" * max(length, 1) not in str(e.value)


def test_key_not_in_repr() -> None:
    k = tls_psk.tls_psk_keys("id", KEY)
    assert KEY.hex() not in repr(k) and KEY.hex() not in str(k)


# -- real handshakes -----------------------------------------------------------------------------------


@needs_openssl
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_handshake_and_echo(version: str) -> None:
    """Both peers keyed from the same TlsPskKeys, as the two agents would hold them."""
    store = KeyStore()
    sid = store.add([StreamKeys("message", tx=tls_psk.tls_psk_keys("msrp-1@ue-a", KEY))], kind="mikey")
    wire = store.keys(sid)["streams"][0]["tx"]
    keys = tls_psk.tls_psk_keys(wire["identity"], base64.b64decode(wire["key"]))
    with PskServer(keys, version) as server:
        result = psk_client(server.port, keys, version, "hello ue-agent\nCLOSE\n")
        log = server.finish()
    assert result.returncode == 0, result.stderr
    assert "tnega-eu olleh" in result.stdout
    assert ("TLSv1.2" if version == "1.2" else "TLSv1.3") in log
    assert ("PSK-AES128-CBC-SHA256" if version == "1.2" else "TLS_AES_128_GCM_SHA256") in log


@needs_openssl
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_wrong_key_fails(version: str) -> None:
    good = tls_psk.tls_psk_keys("msrp-1@ue-a", KEY)
    bad = tls_psk.tls_psk_keys("msrp-1@ue-a", bytes(16))
    with PskServer(good, version) as server:
        result = psk_client(server.port, bad, version, "secret data\nCLOSE\n")
        log = server.finish()
    assert "terces" not in result.stdout
    assert result.returncode != 0
    assert "CONNECTION FAILURE" in log or "error" in log.lower()


@needs_openssl
def test_utf8_identity_tls13() -> None:
    keys = tls_psk.tls_psk_keys("bfcp-é€@ue-a", KEY)
    with PskServer(keys, "1.3") as server:
        result = psk_client(server.port, keys, "1.3", "abc\nCLOSE\n")
        server.finish()
    assert result.returncode == 0 and "cba" in result.stdout


@needs_openssl
def test_wrong_identity_fails_tls13() -> None:
    with PskServer(tls_psk.tls_psk_keys("expected", KEY), "1.3") as server:
        result = psk_client(server.port, tls_psk.tls_psk_keys("someone-else", KEY), "1.3", "abc\nCLOSE\n")
        server.finish()
    assert "cba" not in result.stdout
