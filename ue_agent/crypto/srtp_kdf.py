"""SRTP key derivation (RFC 3711 §4.3 AES-CM PRF, RFC 6188 AES-256, RFC 7714 GCM salts).

Pure functions. The agent does not protect media itself; it uses this to check what it
hands over (known-answer tests, cross-checks against libsrtp) and to describe the
session keys a master key yields.

Construction (RFC 3711 §4.3.1/§4.3.3):
- ``key_id = label (8 bits) || r (48 bits)``, ``r = index DIV kdr`` (0 when ``kdr`` is 0);
- ``x = key_id XOR master_salt`` (both right-aligned in 112 bits);
- the session key is the AES-CM keystream under the master key with ``IV = x * 2^16``,
  truncated to the wanted length.

The 12-byte master salt of the AEAD suites (RFC 7714 §11) enters the same PRF as a
112-bit value left-aligned (two zero octets appended), as libsrtp does; the session salt
is then the first 12 keystream octets. ``test_srtp_kdf`` checks this against libsrtp.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ue_agent.errors import MediaError
from ue_agent.secret import Secret

# RFC 3711 §4.3.2 labels
LABEL_SRTP_ENCRYPTION = 0x00
LABEL_SRTP_AUTH = 0x01
LABEL_SRTP_SALT = 0x02
LABEL_SRTCP_ENCRYPTION = 0x03
LABEL_SRTCP_AUTH = 0x04
LABEL_SRTCP_SALT = 0x05

SALT_BITS = 112
HMAC_SHA1_KEY_LEN = 20  # RFC 3711 §4.2.1: n_a = 160 bits
MAX_INDEX = 2**48 - 1


def aes_cm_keystream(key: bytes, iv: bytes, length: int) -> bytes:
    """AES in counter mode from a 128-bit ``iv`` (RFC 3711 §4.1.1), ``length`` octets."""
    if len(key) not in (16, 24, 32):
        raise MediaError("media.bad_key", "AES-CM needs a 16, 24 or 32-byte key", length=len(key))
    if len(iv) != 16:
        raise MediaError("media.bad_key", "AES-CM needs a 16-byte IV", length=len(iv))
    if length < 0:
        raise MediaError("media.bad_key", "keystream length must not be negative")
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(b"\x00" * length) + enc.finalize()


def _salt112(master_salt: bytes) -> int:
    if len(master_salt) == 14:
        return int.from_bytes(master_salt, "big")
    if len(master_salt) == 12:  # RFC 7714 AEAD suites: left-aligned in 112 bits
        return int.from_bytes(master_salt + b"\x00\x00", "big")
    raise MediaError(
        "media.bad_key", "master salt must be 14 (AES-CM) or 12 (AEAD) bytes", length=len(master_salt)
    )


def derive(
    master_key: bytes, master_salt: bytes, label: int, length: int, index: int = 0, kdr: int = 0
) -> bytes:
    """One session key: RFC 3711 §4.3.1 for ``label`` at packet ``index``."""
    if not 0 <= label <= 0xFF:
        raise MediaError("media.bad_key", "label is one octet", label=label)
    if not 0 <= index <= MAX_INDEX:
        raise MediaError("media.bad_key", "index is 48 bits", index=index)
    if kdr < 0 or (kdr and kdr & (kdr - 1)) or kdr > 2**24:
        raise MediaError("media.bad_key", "key derivation rate is 0 or a power of two up to 2^24", kdr=kdr)
    r = index // kdr if kdr else 0
    key_id = (label << 48) | r
    x = key_id ^ _salt112(master_salt)
    iv = (x << 16).to_bytes(16, "big")
    return aes_cm_keystream(master_key, iv, length)


@dataclass
class SessionKeys:
    """The three session keys for one direction of SRTP or SRTCP."""

    encryption: Secret
    auth: Secret  # empty for AEAD suites (integrity comes from GCM)
    salt: Secret

    def zeroize(self) -> None:
        for s in (self.encryption, self.auth, self.salt):
            s.zeroize()


def session_keys(
    master_key: Secret | bytes,
    master_salt: Secret | bytes,
    *,
    rtcp: bool = False,
    aead: bool | None = None,
    index: int = 0,
    kdr: int = 0,
) -> SessionKeys:
    """Session keys for SRTP (or SRTCP with ``rtcp=True``).

    ``aead`` defaults to "the salt is 12 bytes" (RFC 7714 suites): no auth key, a 12-byte
    session salt. AES-CM suites get a 20-byte HMAC-SHA1 key and a 14-byte salt.
    """
    mk = master_key.reveal() if isinstance(master_key, Secret) else bytes(master_key)
    ms = master_salt.reveal() if isinstance(master_salt, Secret) else bytes(master_salt)
    if aead is None:
        aead = len(ms) == 12
    base = LABEL_SRTCP_ENCRYPTION if rtcp else LABEL_SRTP_ENCRYPTION
    enc = derive(mk, ms, base, len(mk), index, kdr)
    auth = b"" if aead else derive(mk, ms, base + 1, HMAC_SHA1_KEY_LEN, index, kdr)
    salt = derive(mk, ms, base + 2, 12 if aead else 14, index, kdr)
    return SessionKeys(Secret(enc, "srtp-k_e"), Secret(auth, "srtp-k_a"), Secret(salt, "srtp-k_s"))


def aes_cm_packet_iv(session_salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 3711 §4.1.1: ``IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)``."""
    if len(session_salt) != 14:
        raise MediaError("media.bad_key", "AES-CM session salt is 14 bytes")
    iv = (int.from_bytes(session_salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    return iv.to_bytes(16, "big")


def gcm_packet_iv(session_salt: bytes, ssrc: int, index: int) -> bytes:
    """RFC 7714 §8.1: 96-bit IV = (00 00 || SSRC || ROC || SEQ) XOR session salt."""
    if len(session_salt) != 12:
        raise MediaError("media.bad_key", "AEAD session salt is 12 bytes")
    roc, seq = index >> 16, index & 0xFFFF
    block = b"\x00\x00" + ssrc.to_bytes(4, "big") + roc.to_bytes(4, "big") + seq.to_bytes(2, "big")
    return bytes(a ^ b for a, b in zip(block, session_salt, strict=True))
