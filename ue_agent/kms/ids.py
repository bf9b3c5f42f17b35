"""KMS user identities from SIP and tel URIs, and ticket recipient patterns.

The identity carried in IDR payloads is the canonical form of the URI the SIP request
used (To / From / P-Asserted-Identity), so that a UE, its peer and the KMS compare the
same string (rules: docs/kms.md "Identities"):

- ``sip:`` and ``sips:`` -> ``sip:user@host``: display name, angle brackets, port, URI
  parameters and headers dropped; scheme and host lower-cased; the user part kept as is
  (it is case-sensitive, RFC 3261 19.1.4) after percent-decoding of unreserved characters.
- ``sip:+number@host;user=phone`` -> ``tel:+number``.
- ``tel:`` -> ``tel:+digits`` with visual separators removed; a local number (no ``+``) is
  refused, because without its phone-context it names no one globally.

Recipient patterns in a ticket policy: an identity, ``*@domain`` (any SIP identity of that
domain) or ``*`` (anyone who can authenticate to the KMS).
"""

from __future__ import annotations

import re

from ue_agent.errors import KmsError

ANYONE = "*"
_VISUAL = re.compile(r"[-.()\s]")
_UNRESERVED = re.compile(r"%([0-9A-Fa-f]{2})")


def _bad(uri: str, why: str) -> KmsError:
    return KmsError("kms.bad_identity", f"not a usable KMS identity: {why}", uri=uri[:200])


def _decode_unreserved(s: str) -> str:
    def one(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch.isalnum() or ch in "-_.!~*'()" else m.group(0).upper()

    return _UNRESERVED.sub(one, s)


def _tel_number(number: str, uri: str) -> str:
    number = _VISUAL.sub("", number)
    if not re.fullmatch(r"\+[0-9]{1,32}", number):
        raise _bad(uri, "a tel number must be global (+digits)")
    return "tel:" + number


def canonical(uri: str) -> str:
    """The KMS identity of a SIP/tel URI (raises ``kms.bad_identity``)."""
    if not isinstance(uri, str) or not uri.strip() or len(uri) > 1024:
        raise _bad(str(uri), "empty or too long")
    s = uri.strip()
    if "<" in s:  # name-addr: "Bob" <sip:bob@example.org>;tag=1
        start, end = s.find("<"), s.find(">")
        if end < start:
            raise _bad(uri, "unbalanced angle brackets")
        s = s[start + 1 : end]
    scheme, sep, rest = s.partition(":")
    scheme = scheme.lower()
    if not sep or not rest:
        raise _bad(uri, "no scheme")
    if scheme == "tel":
        return _tel_number(rest.split(";", 1)[0], uri)
    if scheme not in ("sip", "sips"):
        raise _bad(uri, f"scheme {scheme!r} is neither sip, sips nor tel")
    rest, _, _headers = rest.partition("?")
    addr, *params = rest.split(";")
    user, at, hostport = addr.rpartition("@")
    if not at or not user:
        raise _bad(uri, "a SIP identity needs user@host")
    user = user.split(":", 1)[0]  # drop a password
    host = hostport.lower()
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if not host or not re.fullmatch(r"[a-z0-9.\-\[\]:]+", host):
        raise _bad(uri, "bad host")
    user = _decode_unreserved(user)
    if any(p.strip().lower() == "user=phone" for p in params) and user.startswith("+"):
        return _tel_number(user, uri)
    return f"sip:{user}@{host}"


def pattern(p: str) -> str:
    """A recipient pattern in canonical form: ``*``, ``*@domain`` or an identity."""
    if p == ANYONE:
        return p
    if p.startswith("*@"):
        domain = p[2:].lower()
        if not domain or not re.fullmatch(r"[a-z0-9.\-]+", domain):
            raise _bad(p, "bad domain pattern")
        return "*@" + domain
    return canonical(p)


def matches(identity: str, pat: str) -> bool:
    """Does the canonical ``identity`` fall under the canonical pattern ``pat``?"""
    if pat == ANYONE:
        return True
    if pat.startswith("*@"):
        return identity.startswith("sip:") and identity.rpartition("@")[2] == pat[2:]
    return identity == pat
