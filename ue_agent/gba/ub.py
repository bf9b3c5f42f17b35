"""Ub bootstrapping (TS 24.109 clause 4, TS 33.220 4.5.2) as a sans-IO state machine.

The caller moves bytes; :class:`UbSession` decides. One run::

    s = UbSession(impi, bsf_fqdn, gba_u=False)
    req = s.start()                                  # GET / with an empty-response Authorization
    step = s.receive(status, headers, body)          # -> CardChallenge(rand, autn)
    req = s.card_result(await card.authenticate(step.rand, step.autn))
    step = s.receive(status, headers, body)          # -> Bootstrap, or another CardChallenge
                                                     #    after a resynchronisation

Every failure is a :class:`~ue_agent.errors.GbaError` with a stable code (docs/gba.md):
``gba.wrong_realm``, ``gba.bad_response``, ``gba.auth_rejected``, ``gba.bsf_error``,
``gba.network_auth_failed``, ``gba.sync_failed``, ``gba.protocol``. After an error the
session is dead; nothing of it is kept.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import defusedxml  # type: ignore[import-untyped]
import defusedxml.ElementTree as SafeET  # type: ignore[import-untyped]

from ue_agent import __version__
from ue_agent.card.results import AkaMacFailure, AkaSuccess, AkaSyncFailure, GbaBootstrapRes
from ue_agent.crypto import digest
from ue_agent.errors import GbaError
from ue_agent.secret import Secret

BSF_CONTENT_TYPE = "application/vnd.3gpp.bsf+xml"
MAX_XML = 16 * 1024
MAX_BTID = 255  # EF_GBABP keeps the B-TID behind a one-octet length (TS 31.102 4.2.79)
MAX_CHALLENGES = 3  # initial + one resync + one stale-nonce retry
TOKEN_TMPI = "3gpp-gba-tmpi"  # TS 33.220 4.5.2: always on Ub
TOKEN_UICC = "3gpp-gba-uicc"  # GBA_U (decision, docs/gba.md)

_BTID_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # MAX_BTID printable ASCII octets


def user_agent(gba_u: bool) -> str:
    tokens = [f"ue-agent/{__version__}", TOKEN_TMPI]
    if gba_u:
        tokens.append(TOKEN_UICC)
    return " ".join(tokens)


@dataclass(frozen=True)
class UbRequest:
    """What to send to the BSF at the Request-URI "/"."""

    method: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class CardChallenge:
    """Run AUTHENTICATE (GBA_ME: IMS AKA / 3G context; GBA_U: GBA bootstrap mode) with these."""

    rand: bytes
    autn: bytes


@dataclass
class Bootstrap:
    """A successful run. ``ks`` is CK||IK (GBA_ME) or None (GBA_U: Ks stays on the card)."""

    btid: str
    lifetime: datetime  # UTC
    lifetime_text: str  # as the BSF wrote it (EF_GBABP keeps this form)
    rand: bytes
    impi: str
    bsf_fqdn: str
    gba_u: bool
    ks: Secret | None = field(default=None, repr=False)
    resynchronised: bool = False

    def __repr__(self) -> str:
        return f"Bootstrap(btid={self.btid!r}, lifetime={self.lifetime.isoformat()}, gba_u={self.gba_u})"


def parse_bootstrapping_info(body: bytes) -> tuple[str, datetime, str]:
    """(B-TID, lifetime as aware UTC datetime, lifetime text) from TS 24.109 annex C XML.

    Namespace-agnostic (local names), size-limited; unknown elements are ignored. The parser
    (defusedxml) refuses a document type declaration, entity declarations and external
    references as it meets them, in any encoding (a byte search misses UTF-16), so no entity
    is ever expanded: TS 24.109 annex C's schema needs none of them.
    """
    if len(body) > MAX_XML:
        raise GbaError("gba.bad_response", f"BootstrappingInfo larger than {MAX_XML} octets")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise GbaError("gba.bad_response", "BootstrappingInfo with a DTD is refused") from None
    except defusedxml.EntitiesForbidden:
        raise GbaError("gba.bad_response", "BootstrappingInfo declares an entity: refused") from None
    except defusedxml.ExternalReferenceForbidden:
        raise GbaError("gba.bad_response", "BootstrappingInfo refers to an external entity") from None
    except (ET.ParseError, defusedxml.DefusedXmlException, ValueError) as exc:
        raise GbaError("gba.bad_response", f"BootstrappingInfo is not XML ({exc})") from None

    def local(tag: str) -> str:
        return tag.rsplit("}", 1)[-1]

    if local(root.tag) != "BootstrappingInfo":
        raise GbaError("gba.bad_response", f"root element is {local(root.tag)[:40]!r}, not BootstrappingInfo")
    found: dict[str, str] = {}
    for child in root:
        name = local(child.tag) if isinstance(child.tag, str) else ""
        if name in ("btid", "lifetime"):
            if name in found:
                raise GbaError("gba.bad_response", f"BootstrappingInfo has two <{name}>")
            found[name] = (child.text or "").strip()
    for name in ("btid", "lifetime"):
        if not found.get(name):
            raise GbaError("gba.bad_response", f"BootstrappingInfo without <{name}>")
    btid = found["btid"]
    if not _BTID_RE.match(btid):
        raise GbaError("gba.bad_response", "B-TID is empty, too long or not printable")
    text = found["lifetime"]
    try:
        lifetime = datetime.fromisoformat(text)
    except ValueError:
        raise GbaError("gba.bad_response", f"lifetime {text[:40]!r} is not an xs:dateTime") from None
    if lifetime.tzinfo is None:
        raise GbaError("gba.bad_response", "lifetime has no time zone (24.109 C.1: UTC with Z)")
    return btid, lifetime.astimezone(UTC), text


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's CIMultiDictProxy is case-insensitive; plain dicts in sans-IO tests may not be
    value = headers.get(name)
    if value is None:
        for k, v in headers.items():
            if k.lower() == name.lower():
                return v
    return value


class UbSession:
    """One bootstrapping run against one BSF."""

    def __init__(
        self,
        impi: str,
        bsf_fqdn: str,
        gba_u: bool = False,
        *,
        cnonce_source: Callable[[int], bytes] = os.urandom,
        now: Callable[[], float] | None = None,
    ) -> None:
        if not impi or not bsf_fqdn:
            raise GbaError("gba.protocol", "IMPI and BSF FQDN are required")
        self.impi = impi
        self.bsf_fqdn = bsf_fqdn.lower()
        self.gba_u = gba_u
        self._cnonce = cnonce_source
        self._now = now
        self.state = "init"
        self._challenge: digest.Challenge | None = None
        self._sent: digest.Credentials | None = None
        self._rand = b""
        self._res: Secret | None = None
        self._ks: Secret | None = None
        self._challenges = 0
        self._resynced = False

    # --- requests -----------------------------------------------------------------------------
    def _headers(self, creds: digest.Credentials) -> dict[str, str]:
        return {
            "User-Agent": user_agent(self.gba_u),
            "Accept": "*/*",
            "Authorization": creds.to_header(),
        }

    def start(self) -> UbRequest:
        """The initial request: username = IMPI, empty nonce and response (24.109 A.3)."""
        self._expect("init")
        creds = digest.Credentials(
            username=self.impi, realm=self.bsf_fqdn, nonce="", uri="/", response="", algorithm="AKAv1-MD5"
        )
        self.state = "await_challenge"
        return UbRequest("GET", self._headers(creds))

    def card_result(self, outcome) -> UbRequest:
        """The answer to the challenge, given the card's outcome (see module docs)."""
        self._expect("await_card")
        ch = self._challenge
        assert ch is not None
        auts_b64: str | None = None
        if isinstance(outcome, AkaMacFailure):
            # The network failed AUTN: the challenge is not trusted, nothing is sent (docs/gba.md).
            self._fail()
            raise GbaError("gba.network_auth_failed", "the card rejected the BSF's AUTN (MAC failure)")
        if isinstance(outcome, AkaSyncFailure):
            if self._resynced:
                self._fail()
                raise GbaError("gba.sync_failed", "SQN still out of range after a resynchronisation")
            if len(outcome.auts) != 14:
                self._fail()
                raise GbaError("gba.protocol", "AUTS from the card is not 14 octets")
            self._resynced = True
            auts_b64 = base64.b64encode(outcome.auts).decode()
            password: Secret = Secret(b"", "empty")  # RFC 3310 3.4: empty password with auts
        elif isinstance(outcome, AkaSuccess) and not self.gba_u:
            self._res = Secret(outcome.res.reveal(), "RES")
            self._ks = Secret.concat([outcome.ck, outcome.ik], "Ks")
            outcome.zeroize()
            password = self._res
        elif isinstance(outcome, GbaBootstrapRes) and self.gba_u:
            self._res = Secret(outcome.res.reveal(), "RES")
            outcome.res.zeroize()
            password = self._res
        else:
            self._fail()
            raise GbaError("gba.protocol", f"unexpected card outcome {type(outcome).__name__} for this mode")
        creds = digest.Credentials(
            username=self.impi,
            realm=ch.realm,
            nonce=ch.nonce,
            uri="/",
            response="",
            algorithm="AKAv1-MD5",
            qop="auth-int",
            nc="00000001",
            cnonce=self._cnonce(16).hex(),
            opaque=ch.opaque,
            auts=auts_b64,
        )
        creds = dataclasses.replace(creds, response=digest.compute_response(creds, password, "GET"))
        self._sent = creds
        self.state = "await_final"
        return UbRequest("GET", self._headers(creds))

    # --- answers ------------------------------------------------------------------------------
    def receive(self, status: int, headers: Mapping[str, str], body: bytes) -> CardChallenge | Bootstrap:
        """Interpret one BSF answer."""
        if self.state not in ("await_challenge", "await_final"):
            raise GbaError("gba.protocol", f"no BSF answer expected in state {self.state}")
        try:
            if status == 401:
                return self._on_challenge(headers)
            if status == 200 and self.state == "await_final" and self._sent and self._sent.auts is None:
                return self._on_success(headers, body)
            if status == 403:
                raise GbaError("gba.auth_rejected", "the BSF refused the authentication (403)", status=403)
            if 500 <= status <= 599:
                raise GbaError("gba.bsf_error", f"the BSF answered {status}", status=status)
            raise GbaError(
                "gba.bad_response", f"unexpected BSF status {status} in {self.state}", status=status
            )
        except GbaError:
            self._fail()
            raise

    def _on_challenge(self, headers: Mapping[str, str]) -> CardChallenge:
        self._challenges += 1
        if self._challenges > MAX_CHALLENGES:
            raise GbaError("gba.auth_rejected", "the BSF keeps challenging", status=401)
        value = _header(headers, "WWW-Authenticate")
        if not value:
            raise GbaError("gba.bad_response", "401 without WWW-Authenticate")
        try:
            ch = digest.Challenge.parse(value)
        except digest.DigestError as exc:
            raise GbaError("gba.bad_response", f"WWW-Authenticate: {exc.message}") from None
        if ch.realm.lower() != self.bsf_fqdn:
            raise GbaError(
                "gba.wrong_realm", "the BSF's realm is not its FQDN", realm=ch.realm, expected=self.bsf_fqdn
            )
        if ch.algorithm != "AKAv1-MD5":
            raise GbaError("gba.bad_response", f"algorithm {ch.algorithm} is not AKAv1-MD5")
        if "auth-int" not in ch.qop:
            raise GbaError("gba.bad_response", 'challenge without qop="auth-int" (24.109 4.2)')
        try:
            raw = base64.b64decode(ch.nonce, validate=True)
        except (binascii.Error, ValueError):
            raise GbaError("gba.bad_response", "nonce is not base64") from None
        if len(raw) < 32:
            raise GbaError("gba.bad_response", "nonce shorter than RAND||AUTN")
        self._drop_keys()
        self._challenge = ch
        self._rand = raw[:16]
        self.state = "await_card"
        return CardChallenge(rand=raw[:16], autn=raw[16:32])  # extra octets: server data, ignored

    def _on_success(self, headers: Mapping[str, str], body: bytes) -> Bootstrap:
        assert self._sent is not None and self._res is not None
        info = _header(headers, "Authentication-Info")
        if not info:
            raise GbaError("gba.bad_response", "200 without Authentication-Info")
        try:
            ok = digest.verify_rspauth(info, self._sent, self._res, body)
        except digest.DigestError as exc:
            raise GbaError("gba.bad_response", f"Authentication-Info: {exc.message}") from None
        if not ok:
            raise GbaError("gba.bad_response", "rspauth does not verify: the answer is not from the BSF")
        ctype = (_header(headers, "Content-Type") or "").split(";")[0].strip().lower()
        if ctype != BSF_CONTENT_TYPE:
            raise GbaError("gba.bad_response", f"content type {ctype[:60]!r} is not {BSF_CONTENT_TYPE}")
        btid, lifetime, text = parse_bootstrapping_info(body)
        if self._now is not None and lifetime.timestamp() <= self._now():
            raise GbaError("gba.bad_response", "the bootstrapping lifetime is already over")
        result = Bootstrap(
            btid=btid,
            lifetime=lifetime,
            lifetime_text=text,
            rand=self._rand,
            impi=self.impi,
            bsf_fqdn=self.bsf_fqdn,
            gba_u=self.gba_u,
            ks=self._ks,
            resynchronised=self._resynced,
        )
        self._ks = None  # handed over
        self._res.zeroize()
        self._res = None
        self.state = "done"
        return result

    # --- housekeeping -------------------------------------------------------------------------
    def _expect(self, state: str) -> None:
        if self.state != state:
            raise GbaError("gba.protocol", f"Ub session is in state {self.state}, not {state}")

    def _drop_keys(self) -> None:
        for s in (self._res, self._ks):
            if s is not None:
                s.zeroize()
        self._res = self._ks = None

    def _fail(self) -> None:
        self._drop_keys()
        self.state = "failed"

    def abort(self) -> None:
        """Drop everything (the transport failed)."""
        self._fail()
