"""TLS-PSK key material for TLS crypto sessions (TCP/TLS/MSRP, TCP/TLS/BFCP).

With KMS-based media security the PSK of a TLS crypto session is the TEK of that crypto
session (TS 23.333 §6.2.19, TS 33.328 Annex H). This module validates what is handed to
the TLS stack (RFC 4279):

- the PSK identity travels as ``opaque psk_identity<0..2^16-1>`` and is text encoded in
  UTF-8 (RFC 4279 §5.1): 1 to 65535 octets once encoded; we also refuse control characters
  (the identity reaches config files, logs and command lines of TLS tools);
- implementations MUST accept identities up to 128 octets and PSKs up to 64 octets
  (RFC 4279 §5.3): :func:`interop_warnings` names what exceeds those;
- the key is 16 to 64 octets here (a TEK is 16 or 32; shorter than 128 bits is refused).
"""

from __future__ import annotations

import unicodedata

from ue_agent.errors import MediaError
from ue_agent.media.keys import TlsPskKeys
from ue_agent.secret import Secret

MAX_IDENTITY_OCTETS = 2**16 - 1
INTEROP_IDENTITY_OCTETS = 128
MIN_KEY = 16
MAX_KEY = 64

BAD_IDENTITY = "media.tls_psk_identity"
BAD_KEY = "media.tls_psk_key"


def check_identity(identity: str | bytes) -> str:
    """The identity as text, or ``media.tls_psk_identity``."""
    if isinstance(identity, bytes | bytearray):
        try:
            identity = bytes(identity).decode("utf-8")
        except UnicodeDecodeError:
            raise MediaError(BAD_IDENTITY, "PSK identity is not UTF-8") from None
    if not isinstance(identity, str):
        raise MediaError(BAD_IDENTITY, "PSK identity must be text")
    try:
        n = len(identity.encode("utf-8"))
    except UnicodeEncodeError:
        raise MediaError(BAD_IDENTITY, "PSK identity is not encodable as UTF-8") from None
    if not 1 <= n <= MAX_IDENTITY_OCTETS:
        raise MediaError(BAD_IDENTITY, "PSK identity must be 1 to 65535 octets in UTF-8", octets=n)
    if any(unicodedata.category(c) == "Cc" for c in identity):
        raise MediaError(BAD_IDENTITY, "PSK identity must not contain control characters")
    return identity


def check_key(key: Secret | bytes) -> Secret:
    """The key as a :class:`Secret` of 16-64 octets, or ``media.tls_psk_key``."""
    secret = key if isinstance(key, Secret) else Secret(key, "tls-psk")
    if not MIN_KEY <= len(secret) <= MAX_KEY:
        raise MediaError(BAD_KEY, "PSK must be 16 to 64 octets", length=len(secret))
    return secret


def tls_psk_keys(identity: str | bytes, key: Secret | bytes) -> TlsPskKeys:
    """A validated :class:`TlsPskKeys`."""
    return TlsPskKeys(identity=check_identity(identity), key=check_key(key))


def interop_warnings(keys: TlsPskKeys) -> list[str]:
    """What a conforming peer is not obliged to accept (RFC 4279 §5.3 minimums)."""
    out = []
    if len(keys.identity.encode("utf-8")) > INTEROP_IDENTITY_OCTETS:
        out.append("identity longer than 128 octets")
    if len(keys.key) > MAX_KEY:
        out.append("key longer than 64 octets")
    return out
