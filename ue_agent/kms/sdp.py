"""The SDP key management attribute ``a=key-mgmt:mikey <base64>`` (RFC 4567)."""

from __future__ import annotations

import base64
import binascii

from ue_agent.errors import MikeyError
from ue_agent.kms import mikey

PREFIX = "a=key-mgmt:"


def build(message: bytes) -> str:
    """The attribute line (without line end) carrying a MIKEY message."""
    if not message or len(message) > mikey.MAX_MESSAGE:
        raise MikeyError("mikey.malformed", "no MIKEY message to put in key-mgmt")
    return f"{PREFIX}mikey {base64.b64encode(message).decode()}"


def parse(line: str) -> bytes:
    """The MIKEY message of an ``a=key-mgmt`` line (``mikey.malformed``/``mikey.unsupported``)."""
    text = line.strip()
    if text.startswith("a="):
        text = text[2:]
    name, sep, value = text.partition(":")
    if name != "key-mgmt" or not sep:
        raise MikeyError("mikey.malformed", "not a key-mgmt attribute")
    prot, _, data = value.strip().partition(" ")
    if prot.lower() != "mikey":
        raise MikeyError("mikey.unsupported", "key management protocol other than mikey", prtcl_id=prot[:32])
    data = data.strip()
    if not data:
        raise MikeyError("mikey.malformed", "key-mgmt without data")
    try:
        out = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise MikeyError("mikey.malformed", "key-mgmt data is not base64") from None
    if not out:
        raise MikeyError("mikey.malformed", "key-mgmt data is empty")
    return out


def find(sdp: str) -> list[bytes]:
    """Every MIKEY message in an SDP body (session level first, then per media)."""
    return [parse(line) for line in sdp.splitlines() if line.strip().startswith(PREFIX)]
