"""The lab BSF: Ub per TS 24.109 clause 4 / annex A, and the Zn function for in-process NAFs.

The protocol logic is :meth:`Bsf.handle` (method, path, headers, body in; a :class:`BsfReply`
out) so it can be exercised without sockets; :meth:`Bsf.aiohttp_handler` is the HTTP edge.

Ub, as implemented (docs/gba.md has the sources):
- ``GET /`` with ``Authorization: Digest username=<IMPI>, nonce=""...`` -> ``401`` with
  ``WWW-Authenticate: Digest realm=<BSF FQDN>, nonce=base64(RAND||AUTN), opaque,
  algorithm=AKAv1-MD5, qop="auth-int"``.
- the answer with ``response`` over RES (qop auth-int) -> ``200`` with ``Authentication-Info``
  (rspauth over the body), ``Expires`` and an ``application/vnd.3gpp.bsf+xml``
  BootstrappingInfo; B-TID = base64(RAND)@<BSF FQDN>; Ks = CK||IK is kept for the NAFs.
- an answer with ``auts`` (response over an empty password) -> the HSS resynchronises and a
  fresh ``401`` challenge follows; a wrong response or a bad AUTS -> ``403``.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ue_agent.crypto import digest
from ue_agent.crypto.kdf import ks_naf
from ue_agent.errors import GbaError
from ue_agent.lab.hss import AuthVector, Hss
from ue_agent.secret import Secret

log = logging.getLogger(__name__)

BSF_CONTENT_TYPE = "application/vnd.3gpp.bsf+xml"
GBA_NS = "uri:3gpp-gba"
PENDING_TTL_S = 120.0  # an unanswered challenge is dropped after this long
MAX_PENDING = 1024


@dataclass
class LabFaults:
    """Switches tests flip to make the lab network misbehave (all off by default).

    ``bsf_status``: the BSF answers every request with this status (e.g. 500, 503);
    ``bsf_malformed_xml``: the 200 carries a body that is not BootstrappingInfo XML;
    ``bsf_wrong_realm``: challenges name a realm other than the BSF FQDN;
    ``bsf_down`` / ``kms_down``: the listener drops each connection without an answer;
    ``kms_status``: the KMS listener answers every request with this status;
    ``bsf_delay_s`` / ``kms_delay_s``: the listener waits this long before it handles each
    request (a radio network's round trip).
    """

    bsf_status: int | None = None
    bsf_malformed_xml: bool = False
    bsf_wrong_realm: bool = False
    bsf_down: bool = False
    kms_down: bool = False
    kms_status: int | None = None
    bsf_delay_s: float = 0.0
    kms_delay_s: float = 0.0

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class BootstrapContext:
    """What the BSF keeps per B-TID (TS 33.220 4.5.2): IMPI, Ks, RAND, expiry."""

    btid: str
    impi: str
    ks: Secret
    rand: bytes
    expires: float

    def __repr__(self) -> str:
        return f"<BootstrapContext {self.btid} impi={self.impi!r}>"


@dataclass
class _Pending:
    vector: AuthVector
    opaque: str
    created: float


@dataclass
class BsfReply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def format_lifetime(ts: float) -> str:
    """xs:dateTime in UTC with "Z" (TS 24.109 C.1)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bootstrapping_info_xml(btid: str, lifetime: str) -> bytes:
    from xml.sax.saxutils import escape

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<BootstrappingInfo xmlns="{GBA_NS}">'
        f"<btid>{escape(btid)}</btid><lifetime>{escape(lifetime)}</lifetime>"
        "</BootstrappingInfo>\n"
    ).encode()


class Bsf:
    """A BSF for one FQDN over one :class:`Hss`."""

    def __init__(
        self,
        hss: Hss,
        fqdn: str,
        lifetime_s: float = 3600,
        *,
        faults: LabFaults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hss = hss
        self.fqdn = fqdn.lower()
        self.lifetime_s = lifetime_s
        self.faults = faults if faults is not None else LabFaults()
        self.clock = clock
        self._pending: dict[str, _Pending] = {}
        self._contexts: dict[str, BootstrapContext] = {}
        self._lock = threading.Lock()
        #: what happened, for tests and the demo timeline: "challenge", "resync", "bootstrap", "reject"
        self.stats: dict[str, int] = {"challenge": 0, "resync": 0, "bootstrap": 0, "reject": 0}

    # --- Zn: for NAFs in process -------------------------------------------------------------
    def context(self, btid: str) -> BootstrapContext:
        """The live context for ``btid``; ``gba.unknown_btid`` / ``gba.btid_expired`` otherwise."""
        with self._lock:
            ctx = self._contexts.get(btid)
            if ctx is None:
                raise GbaError("gba.unknown_btid", "unknown B-TID", btid=btid)
            if self.clock() >= ctx.expires:
                del self._contexts[btid]
                ctx.ks.zeroize()
                raise GbaError("gba.btid_expired", "bootstrapping context expired", btid=btid)
            return ctx

    def naf_key(self, btid: str, naf_id: bytes) -> tuple[str, Secret]:
        """Zn: (IMPI, Ks_NAF) for a B-TID and NAF_Id (TS 33.220 4.5.3, B.3)."""
        ctx = self.context(btid)
        key = ks_naf(ctx.ks.reveal(), ctx.rand, ctx.impi, naf_id)
        return ctx.impi, Secret(key, "Ks_NAF")

    def naf_key_expiry(self, btid: str) -> float:
        return self.context(btid).expires

    def forget(self, btid: str) -> None:
        """Drop a context (tests: the network lost the B-TID)."""
        with self._lock:
            ctx = self._contexts.pop(btid, None)
        if ctx is not None:
            ctx.ks.zeroize()

    @property
    def btids(self) -> list[str]:
        with self._lock:
            return list(self._contexts)

    # --- Ub -----------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> BsfReply:
        f = self.faults
        if f.bsf_status is not None:
            return BsfReply(f.bsf_status, {"Content-Type": "text/plain"}, b"lab fault: BSF error\n")
        if path != "/":
            return _text(404, "the BSF answers Ub at /")
        if method != "GET":
            return _text(405, "Ub uses GET")
        auth = headers.get("Authorization")
        if not auth:
            return _text(400, "Authorization with the private identity is required")
        try:
            creds = digest.Credentials.parse(auth)
        except digest.DigestError as exc:
            return _text(400, exc.message)
        self._expire_pending()
        if not creds.nonce:
            return self._challenge(creds.username)
        with self._lock:
            pending = self._pending.pop(creds.nonce, None)
        if pending is None:
            # not a nonce we have outstanding (expired or never issued): challenge again
            return self._challenge(creds.username, stale=True)
        reason = self._check_binding(creds, pending)
        if reason:
            return self._reject(reason, creds.username)
        if creds.auts is not None:
            return self._resync(creds, pending, body)
        if not digest.verify_response(creds, pending.vector.xres, method, body):
            return self._reject("wrong response", creds.username)
        return self._bootstrapped(creds, pending, body)

    def _challenge(self, impi: str, stale: bool = False) -> BsfReply:
        if impi not in self.hss:
            return self._reject("unknown private identity", impi)
        av = self.hss.vector(impi)
        nonce = base64.b64encode(av.rand + av.autn).decode()
        opaque = os.urandom(16).hex()
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                oldest = min(self._pending, key=lambda n: self._pending[n].created)
                del self._pending[oldest]
            self._pending[nonce] = _Pending(av, opaque, self.clock())
        realm = "wrong-realm.invalid" if self.faults.bsf_wrong_realm else self.fqdn
        ch = digest.Challenge(
            realm=realm, nonce=nonce, algorithm="AKAv1-MD5", qop=("auth-int",), opaque=opaque, stale=stale
        )
        self.stats["challenge"] += 1
        return BsfReply(401, {"WWW-Authenticate": ch.to_header()})

    def _check_binding(self, creds: digest.Credentials, pending: _Pending) -> str:
        if creds.username != pending.vector.impi:
            return "username does not match the challenge"
        if creds.realm.lower() != self.fqdn and not self.faults.bsf_wrong_realm:
            return "realm is not the BSF FQDN"
        if creds.uri != "/":
            return "digest-uri is not /"
        if creds.qop != "auth-int":
            return "qop must be auth-int"
        if creds.algorithm.upper() != "AKAV1-MD5":
            return "algorithm must be AKAv1-MD5"
        if creds.opaque != pending.opaque:
            return "opaque does not match"
        return ""

    def _resync(self, creds: digest.Credentials, pending: _Pending, body: bytes) -> BsfReply:
        # RFC 3310 3.4: with AUTS the response is computed with an empty password.
        if not digest.verify_response(creds, b"", "GET", body):
            return self._reject("sync-failure response does not verify", creds.username)
        try:
            auts = base64.b64decode(creds.auts or "", validate=True)
        except (binascii.Error, ValueError):
            return self._reject("auts is not base64", creds.username)
        try:
            self.hss.resync(creds.username, pending.vector.rand, auts)
        except GbaError as exc:
            return self._reject(exc.message, creds.username)
        self.stats["resync"] += 1
        return self._challenge(creds.username)

    def _bootstrapped(self, creds: digest.Credentials, pending: _Pending, req_body: bytes) -> BsfReply:
        av = pending.vector
        btid = f"{base64.b64encode(av.rand).decode()}@{self.fqdn}"
        now = self.clock()
        expires = now + self.lifetime_s
        ctx = BootstrapContext(btid, av.impi, Secret.concat([av.ck, av.ik], "Ks"), av.rand, expires)
        with self._lock:
            old = self._contexts.pop(btid, None)
            self._contexts[btid] = ctx
        if old is not None:
            old.ks.zeroize()
        lifetime = format_lifetime(expires)
        if self.faults.bsf_malformed_xml:
            body = b'<?xml version="1.0"?><BootstrappingInfo xmlns="uri:3gpp-gba"><btid>' + btid.encode()
        else:
            body = bootstrapping_info_xml(btid, lifetime)
        self.stats["bootstrap"] += 1
        log.info("bootstrapped %s as %s", av.impi, btid)
        return BsfReply(
            200,
            {
                "Authentication-Info": digest.build_auth_info(creds, av.xres, body),
                "Expires": email.utils.formatdate(expires, usegmt=True),
                "Content-Type": BSF_CONTENT_TYPE,
            },
            body,
        )

    def _reject(self, reason: str, impi: str) -> BsfReply:
        self.stats["reject"] += 1
        log.info("Ub rejected for %r: %s", impi, reason)
        return _text(403, reason)

    def _expire_pending(self) -> None:
        now = self.clock()
        with self._lock:
            for nonce in [n for n, p in self._pending.items() if now - p.created > PENDING_TTL_S]:
                del self._pending[nonce]

    # --- the HTTP edge ----------------------------------------------------------------------
    async def aiohttp_handler(self, request):  # -> web.StreamResponse
        from aiohttp import web

        body = await request.read()
        reply = self.handle(request.method, request.path, request.headers, body)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    def create_app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.aiohttp_handler)
        return app


def _text(status: int, message: str) -> BsfReply:
    return BsfReply(status, {"Content-Type": "text/plain; charset=utf-8"}, (message + "\n").encode())
