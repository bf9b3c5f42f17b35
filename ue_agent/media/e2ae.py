"""e2ae media-security indications (TS 33.328, TS 24.229 §7.2A.7 and §7.5.2), sans-IO.

REGISTER: the UE lists the media-security mechanisms it supports in ``Security-Client``
with the ``mediasec`` parameter (``Security-Client: sdes-srtp;mediasec``); the P-CSCF
answers with ``Security-Server`` and the UE echoes that in ``Security-Verify`` (RFC 3329).
Session set-up: the UE asks for e2ae on an m-line with ``a=3ge2ae:requested``; the P-CSCF
says it applied it with ``a=3ge2ae:applied``. Other indicator values are ignored
(TS 24.229 §7.5.2.2).

The header parser follows RFC 3329 §2.2: ``mechanism *(";" param)`` items separated by
commas, parameters ``token ["=" (token / quoted-string)]``. The IMS ``ipsec-3gpp`` entries of
the same headers (owned by the SIP stack) parse too, so a whole header value can be fed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ue_agent.errors import MediaError

MEDIASEC = "mediasec"
#: Media-security mechanism names (RFC 3329 registry, TS 24.229 §7.2A.7).
MEDIA_MECHANISMS = ("sdes-srtp", "msrp-tls", "bfcp-tls", "udptl-dtls")
E2AE_ATTRIBUTE = "3ge2ae"
REQUESTED = "requested"
APPLIED = "applied"
MAX_HEADER = 8192

MALFORMED = "media.security_header_malformed"

_TOKEN = r"[!%'*+\-.0-9A-Z_`a-z~]+"
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x00-\x7f])*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*(?:=\s*({_TOKEN}|{_QUOTED}|\[[0-9A-Fa-f:.]+\]))?\s*")
_HEADER_NAME = re.compile(r"\s*(Security-Client|Security-Server|Security-Verify)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class SecurityMechanism:
    """One ``sec-mechanism`` of a Security-* header."""

    name: str
    params: tuple[tuple[str, str | None], ...] = field(default_factory=tuple)

    @property
    def mediasec(self) -> bool:
        return any(k.lower() == MEDIASEC for k, _ in self.params)

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k.lower() == name.lower():
                return v
        return None

    def __str__(self) -> str:
        parts = [self.name] + [k if v is None else f"{k}={v}" for k, v in self.params]
        return ";".join(parts)


def _split(value: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quoted strings (backslash escapes inside quotes)."""
    out: list[str] = []
    buf: list[str] = []
    quoted = escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append("".join(buf))
            buf = []
            continue
        buf.append(ch)
    if quoted:
        raise MediaError(MALFORMED, "unterminated quoted string in a Security-* header")
    out.append("".join(buf))
    return out


def parse_security_header(value: str) -> list[SecurityMechanism]:
    """Parse a Security-Client/-Server/-Verify value (the header name may be included)."""
    if not isinstance(value, str) or len(value) > MAX_HEADER:
        raise MediaError(MALFORMED, "Security-* header must be text under 8192 characters")
    m = _HEADER_NAME.match(value)
    if m:
        value = value[m.end() :]
    mechs = []
    for item in _split(value, ","):
        pieces = _split(item, ";")
        name = pieces[0].strip()
        if not re.fullmatch(_TOKEN, name):
            raise MediaError(MALFORMED, "mechanism name is not a token", item=item.strip()[:60])
        params = []
        for p in pieces[1:]:
            pm = _PARAM.fullmatch(p)
            if not pm:
                raise MediaError(MALFORMED, "bad mechanism parameter", mechanism=name, param=p.strip()[:60])
            params.append((pm.group(1), pm.group(2)))
        mechs.append(SecurityMechanism(name, tuple(params)))
    return mechs


def security_client_value(mechanisms: Sequence[str] = ("sdes-srtp",)) -> str:
    """``sdes-srtp;mediasec, msrp-tls;mediasec`` for the REGISTER ``Security-Client``."""
    if isinstance(mechanisms, str) or not mechanisms:
        raise MediaError("media.bad_request", "give a non-empty list of media-security mechanisms")
    for m in mechanisms:
        if m not in MEDIA_MECHANISMS:
            raise MediaError("media.bad_request", f"unknown media-security mechanism {m!r}", mechanism=m)
    return ", ".join(f"{m};{MEDIASEC}" for m in dict.fromkeys(mechanisms))


def media_mechanisms(mechs: Iterable[SecurityMechanism]) -> list[str]:
    """The media-security mechanisms (with ``mediasec``) among parsed header entries."""
    return [m.name for m in mechs if m.mediasec]


def negotiated(client: Sequence[str], server_value: str) -> list[str]:
    """Mechanisms both we (``client``) and the P-CSCF's ``Security-Server`` support for media.

    e2ae may be requested in SDP only for these (TS 33.328: both sides must indicate support).
    """
    offered = media_mechanisms(parse_security_header(server_value))
    return [m for m in client if m in offered]


def security_verify_value(server_value: str) -> str:
    """The ``Security-Verify`` value: the media entries of ``Security-Server``, echoed (RFC 3329)."""
    mechs = [m for m in parse_security_header(server_value) if m.mediasec]
    return ", ".join(str(m) for m in mechs)


def e2ae_line(indicator: str = REQUESTED) -> str:
    """``a=3ge2ae:requested`` (the UE's indication in its SDP offer)."""
    if indicator not in (REQUESTED, APPLIED):
        raise MediaError("media.bad_request", "3ge2ae indicator is 'requested' or 'applied'")
    return f"a={E2AE_ATTRIBUTE}:{indicator}"


def parse_e2ae(lines: Sequence[str]) -> str | None:
    """The 3ge2ae indicator among one m-line's attribute lines: requested, applied or None.

    Unknown indicator values are ignored as TS 24.229 §7.5.2.2 requires; a malformed
    attribute (not a token) is ``media.sdes_malformed``.
    """
    found: str | None = None
    for line in lines:
        s = line.strip()
        if s.startswith("a="):
            s = s[2:]
        if not s.startswith(E2AE_ATTRIBUTE + ":") and s != E2AE_ATTRIBUTE:
            continue
        value = s[len(E2AE_ATTRIBUTE) + 1 :]
        if not re.fullmatch(_TOKEN, value):
            raise MediaError("media.sdes_malformed", "a=3ge2ae value is not a token")
        if value in (REQUESTED, APPLIED):
            found = value
    return found
