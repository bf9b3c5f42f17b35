"""HTTP Digest (RFC 2617) with AKAv1-MD5 (RFC 3310): header codecs and the response math.

Pure functions. Used on Ub (UE <-> BSF, password = RES as raw octets) and on Ua (UE <-> NAF,
password = base64 of Ks_NAF, see docs/gba.md). Only ``qop="auth"`` and ``qop="auth-int"``
and the MD5 algorithms (``MD5``, ``AKAv1-MD5``) are supported; anything else is a
:class:`DigestError`, never a silent default.

Passwords are taken as :class:`~ue_agent.secret.Secret` (or raw bytes for tests and vectors)
and never appear in reprs or errors.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field

from ue_agent.errors import AgentError
from ue_agent.secret import Secret

#: algorithms whose H() is MD5 and whose A1 is username:realm:password (RFC 2617 3.2.2.2, RFC 3310 3.1)
ALGORITHMS = ("MD5", "AKAv1-MD5")
QOPS = ("auth", "auth-int")
MAX_HEADER = 8192  # longer Digest headers are refused (a real one is a few hundred octets)


class DigestError(AgentError):
    """A Digest header that cannot be parsed or a parameter outside what we support."""

    code = "gba.bad_digest"


# --- header codec ----------------------------------------------------------------------------
# Values we write without quotes (RFC 2617: algorithm, qop in Authorization, nc are tokens).
_UNQUOTED = frozenset({"algorithm", "qop", "nc", "stale"})
# The same grammar as regular expressions (a header is scanned a run at a time, not a
# character at a time: it is parsed on every HTTP exchange of a bootstrap and a KMS call)
_WS = re.compile(r"[ \t\r\n]*")
_COMMAS = re.compile(r"(?:,[ \t\r\n]*)*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")  # tchar (RFC 7230 3.2.6)
_WORD = re.compile(r"[^, \t\r\n]*")  # a token value: up to a comma or white space
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)  # a quoted-string with its quoted-pairs
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _skip_ws(s: str, i: int) -> int:
    return _WS.match(s, i).end()  # type: ignore[union-attr]  # matches the empty string


def _parse_params(s: str, i: int) -> dict[str, str]:
    """auth-param *( "," auth-param ); names are lowercased, quoted-pairs unescaped."""
    params: dict[str, str] = {}
    n = len(s)
    while True:
        # empty list elements are allowed (RFC 7230 7)
        i = _COMMAS.match(s, _skip_ws(s, i)).end()  # type: ignore[union-attr]
        if i >= n:
            return params
        start = i
        i = _TOKEN.match(s, i).end()  # type: ignore[union-attr]
        name = s[start:i].lower()
        if not name:
            raise DigestError(message=f"expected a parameter name at offset {start}")
        i = _skip_ws(s, i)
        if i >= n or s[i] != "=":
            raise DigestError(message=f"parameter '{name}' has no value")
        i = _skip_ws(s, i + 1)
        if i < n and s[i] == '"':
            m = _QUOTED.match(s, i)
            if m is None:
                raise DigestError(message=f"unterminated quoted string in '{name}'")
            value = m.group(1)
            if "\\" in value:
                value = _QUOTED_PAIR.sub(r"\1", value)
            i = m.end()
        else:
            start = i
            i = _WORD.match(s, i).end()  # type: ignore[union-attr]
            value = s[start:i]
            if not value:
                raise DigestError(message=f"parameter '{name}' has an empty token value")
        if name in params:
            raise DigestError(message=f"parameter '{name}' appears twice")
        params[name] = value
        i = _skip_ws(s, i)
        if i < n and s[i] != ",":
            raise DigestError(message=f"expected ',' after parameter '{name}'")


def parse_digest_header(value: str) -> dict[str, str]:
    """Parse ``Digest k=v, ...`` (WWW-Authenticate or Authorization) into lowercased params."""
    if not isinstance(value, str) or len(value) > MAX_HEADER:
        raise DigestError(message="Digest header missing or too long")
    s = value.strip()
    scheme, _, rest = s.partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(message=f"authentication scheme is '{scheme[:20]}', not Digest")
    return _parse_params(rest, 0)


def parse_auth_info(value: str) -> dict[str, str]:
    """Parse an Authentication-Info header (a bare parameter list, no scheme)."""
    if not isinstance(value, str) or len(value) > MAX_HEADER:
        raise DigestError(message="Authentication-Info missing or too long")
    return _parse_params(value.strip(), 0)


def _quote(v: str) -> str:
    if _CONTROL.search(v):
        raise DigestError(message="control character in a Digest parameter")
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_params(params: dict[str, str]) -> str:
    """``k="v", k2=token`` in insertion order; tokens stay unquoted where RFC 2617 says so."""
    out = []
    for k, v in params.items():
        if k in _UNQUOTED and v and _TOKEN.fullmatch(v):
            out.append(f"{k}={v}")
        else:
            out.append(f"{k}={_quote(v)}")
    return ", ".join(out)


# --- typed challenge / credentials ---------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    """A parsed Digest challenge (WWW-Authenticate)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str) -> Challenge:
        p = parse_digest_header(header)
        for key in ("realm", "nonce"):
            if key not in p:
                raise DigestError(message=f"challenge without '{key}'")
        algorithm = p.pop("algorithm", "MD5")
        if algorithm.upper() not in (a.upper() for a in ALGORITHMS):
            raise DigestError(message=f"unsupported Digest algorithm '{algorithm[:32]}'")
        algorithm = next(a for a in ALGORITHMS if a.upper() == algorithm.upper())
        qop = tuple(q.strip().lower() for q in p.pop("qop", "").split(",") if q.strip())
        return cls(
            realm=p.pop("realm"),
            nonce=p.pop("nonce"),
            algorithm=algorithm,
            qop=qop,
            opaque=p.pop("opaque", None),
            stale=p.pop("stale", "false").lower() == "true",
            extra=p,
        )

    def to_header(self) -> str:
        params: dict[str, str] = {"realm": self.realm, "nonce": self.nonce}
        if self.qop:
            params["qop"] = ",".join(self.qop)
        if self.opaque is not None:
            params["opaque"] = self.opaque
        if self.stale:
            params["stale"] = "true"
        params["algorithm"] = self.algorithm
        params.update(self.extra)
        # qop in a challenge is a quoted list (RFC 2617 3.2.1)
        text = format_params({k: v for k, v in params.items() if k != "qop"})
        if self.qop:
            text += f', qop="{",".join(self.qop)}"'
        return "Digest " + text


@dataclass(frozen=True)
class Credentials:
    """A parsed Authorization header. ``response`` may be empty (initial Ub request)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    auts: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, header: str) -> Credentials:
        p = parse_digest_header(header)
        for key in ("username", "realm", "nonce", "uri", "response"):
            if key not in p:
                raise DigestError(message=f"Authorization without '{key}'")
        qop = p.pop("qop", None)
        if qop is not None:
            qop = qop.lower()
            if qop not in QOPS:
                raise DigestError(message=f"unsupported qop '{qop[:16]}'")
            if "nc" not in p or "cnonce" not in p:
                raise DigestError(message="qop given without nc and cnonce")
        nc = p.pop("nc", None)
        if nc is not None and (len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc)):
            raise DigestError(message="nc must be 8 hex digits")
        return cls(
            username=p.pop("username"),
            realm=p.pop("realm"),
            nonce=p.pop("nonce"),
            uri=p.pop("uri"),
            response=p.pop("response"),
            algorithm=p.pop("algorithm", "MD5"),
            qop=qop,
            nc=nc,
            cnonce=p.pop("cnonce", None),
            opaque=p.pop("opaque", None),
            auts=p.pop("auts", None),
            extra=p,
        )

    def to_header(self) -> str:
        params: dict[str, str] = {
            "username": self.username,
            "realm": self.realm,
            "nonce": self.nonce,
            "uri": self.uri,
        }
        if self.qop is not None:
            params.update(qop=self.qop, nc=self.nc or "", cnonce=self.cnonce or "")
        params["response"] = self.response
        if self.opaque is not None:
            params["opaque"] = self.opaque
        params["algorithm"] = self.algorithm
        if self.auts is not None:
            params["auts"] = self.auts
        params.update(self.extra)
        return "Digest " + format_params(params)


# --- the math (RFC 2617 3.2.2) ---------------------------------------------------------------
def _h(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _pw(password: Secret | bytes) -> bytes:
    return password.reveal() if isinstance(password, Secret) else bytes(password)


def ha1(username: str, realm: str, password: Secret | bytes, algorithm: str = "MD5") -> str:
    """H(A1) = MD5(username ":" realm ":" password); for AKAv1-MD5 the password is RES raw (RFC 3310 3.3)."""
    if algorithm not in ALGORITHMS:
        raise DigestError(message=f"unsupported Digest algorithm '{algorithm[:32]}'")
    return _h(username.encode() + b":" + realm.encode() + b":" + _pw(password))


def ha2(method: str, uri: str, qop: str | None, body: bytes = b"") -> str:
    """H(A2): ``method:uri`` or, for auth-int, ``method:uri:H(entity-body)``."""
    if qop == "auth-int":
        return _h(f"{method}:{uri}:{_h(body)}".encode())
    if qop in (None, "auth"):
        return _h(f"{method}:{uri}".encode())
    raise DigestError(message=f"unsupported qop '{qop[:16]}'")


def response(
    ha1_hex: str, nonce: str, ha2_hex: str, qop: str | None = None, nc: str = "", cnonce: str = ""
) -> str:
    if qop is None:
        return _h(f"{ha1_hex}:{nonce}:{ha2_hex}".encode())
    return _h(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2_hex}".encode())


def compute_response(creds: Credentials, password: Secret | bytes, method: str, body: bytes = b"") -> str:
    """The request-digest for ``creds`` (its ``response`` field is ignored)."""
    h1 = ha1(creds.username, creds.realm, password, _canon_alg(creds.algorithm))
    h2 = ha2(method, creds.uri, creds.qop, body)
    return response(h1, creds.nonce, h2, creds.qop, creds.nc or "", creds.cnonce or "")


def compute_rspauth(creds: Credentials, password: Secret | bytes, body: bytes = b"") -> str:
    """rspauth of Authentication-Info: as the response, with an empty method (RFC 2617 3.2.3)."""
    return compute_response(creds, password, "", body)


def verify_response(creds: Credentials, password: Secret | bytes, method: str, body: bytes = b"") -> bool:
    """Constant-time check of ``creds.response``."""
    expected = compute_response(creds, password, method, body)
    return hmac.compare_digest(expected.encode(), creds.response.lower().encode())


def verify_rspauth(
    auth_info: str | dict[str, str], creds: Credentials, password: Secret | bytes, body: bytes = b""
) -> bool:
    """Check an Authentication-Info header against the request we sent (``creds``).

    The server's cnonce/nc, when echoed, must equal ours; qop must be the one we used.
    """
    info = parse_auth_info(auth_info) if isinstance(auth_info, str) else auth_info
    got = info.get("rspauth")
    if not got:
        return False
    if "cnonce" in info and info["cnonce"] != (creds.cnonce or ""):
        return False
    if "nc" in info and info["nc"].lower() != (creds.nc or "").lower():
        return False
    if "qop" in info and info["qop"].lower() != (creds.qop or ""):
        return False
    expected = compute_rspauth(creds, password, body)
    return hmac.compare_digest(expected.encode(), got.lower().encode())


def build_auth_info(creds: Credentials, password: Secret | bytes, body: bytes = b"") -> str:
    """Authentication-Info value for a request that verified (server side)."""
    params = {"rspauth": compute_rspauth(creds, password, body)}
    if creds.qop is not None:
        params.update(qop=creds.qop, cnonce=creds.cnonce or "", nc=creds.nc or "")
    return format_params(params)


def _canon_alg(algorithm: str) -> str:
    for a in ALGORITHMS:
        if a.upper() == algorithm.upper():
            return a
    raise DigestError(message=f"unsupported Digest algorithm '{algorithm[:32]}'")
