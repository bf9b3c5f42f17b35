"""Server-side Ua HTTP Digest for a lab NAF (TS 24.109 clause 5.2, TS 33.220 4.5.3).

``NafAuth(bsf, naf_fqdn, ua_id)`` challenges with ``realm="3GPP-bootstrapping@<naf fqdn>"``,
``qop="auth-int"`` (the body, e.g. a MIKEY message, is covered by the digest) and a fresh
nonce; the UE answers with username = B-TID and password = base64(Ks_NAF). The NAF fetches
Ks_NAF from the BSF over "Zn" (an in-process call to :meth:`Bsf.naf_key`).

- a ``User-Agent`` without the ``3gpp-gba`` product token -> ``403``, unchallenged: the UE did
  not indicate that it can answer a 3GPP-bootstrapping challenge (TS 24.109 annex B.3, Table
  B.3-1), and this NAF has no other way to authenticate it;
- no/stale Authorization, or an unknown/expired B-TID -> ``401`` with a fresh challenge
  (24.109 5.2.4: the UE bootstraps again);
- a wrong response or a B-TID/realm mismatch -> ``403``;
- a nonce/nc pair seen before (a replay) -> ``401`` with a fresh challenge, counted in
  :attr:`NafAuth.stats`.

Use :meth:`NafAuth.middleware` to protect a whole aiohttp app: each handler gets the
:class:`NafPeer` with :func:`peer_of` (``request[NAF_PEER]``) and the response gets
``Authentication-Info``. Or call ``await naf_auth.authenticate(request)`` in a handler.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ue_agent.crypto import digest
from ue_agent.crypto.kdf import UA_KMS, naf_id
from ue_agent.errors import GbaError
from ue_agent.secret import Secret

log = logging.getLogger(__name__)

NONCE_TTL_S = 300.0
MAX_NONCES = 4096


@dataclass
class NafPeer:
    """An authenticated Ua peer. ``ks_naf`` stays here for the NAF's own use."""

    impi: str
    btid: str
    ks_naf: Secret
    credentials: digest.Credentials

    def authentication_info(self, body: bytes) -> str:
        """Authentication-Info for the NAF's answer: rspauth over ``body`` (qop auth-int)."""
        return digest.build_auth_info(self.credentials, _password(self.ks_naf), body)

    def __repr__(self) -> str:
        return f"NafPeer(impi={self.impi!r}, btid={self.btid!r})"


def _request_key():
    from aiohttp import web

    key_type = getattr(web, "RequestKey", None)  # aiohttp >= 3.12
    return key_type("naf_peer", NafPeer) if key_type is not None else "naf_peer"


#: where :meth:`NafAuth.middleware` stores the peer on the request
NAF_PEER = _request_key()


def peer_of(request) -> NafPeer:
    """The authenticated peer of a request that passed :meth:`NafAuth.middleware`."""
    return request[NAF_PEER]


#: TS 24.109 B.3: the product token a UE puts in its User-Agent to indicate GBA (the lab's own
#: copy of the text, not the UE client's constant)
GBA_TOKEN = "3gpp-gba"


def indicates_gba(user_agent: str) -> bool:
    """Whether a ``User-Agent`` value names the ``3gpp-gba`` product (RFC 9110 10.1.5: products
    ``name[/version]`` and comments in parentheses)."""
    text = re.sub(r"\([^)]*\)", " ", user_agent)
    return any(p.split("/", 1)[0] == GBA_TOKEN for p in text.split())


def _password(ks_naf: Secret) -> Secret:
    """Ua Digest password: base64 of Ks_NAF (see docs/gba.md, TS 24.109 5.2.2 / TS 33.222)."""
    return Secret(base64.b64encode(ks_naf.reveal()), "Ua password")


class NafAuth:
    """Ua digest verifier for one NAF FQDN and Ua security protocol id."""

    def __init__(
        self,
        bsf,
        naf_fqdn: str,
        ua_id: bytes = UA_KMS,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.bsf = bsf
        self.naf_fqdn = naf_fqdn  # as configured: it enters Ks_NAF (TS 33.220 B.3)
        self.ua_id = bytes(ua_id)
        self.naf_id = naf_id(self.naf_fqdn, self.ua_id)
        self.realm = f"3GPP-bootstrapping@{self.naf_fqdn}"
        self.clock = clock
        self._nonces: dict[str, tuple[float, int]] = {}  # nonce -> (issued, highest nc seen)
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"challenge": 0, "ok": 0, "forbidden": 0, "replay": 0, "unknown_btid": 0}

    # --- challenge ----------------------------------------------------------------------------
    def challenge(self, stale: bool = False) -> str:
        nonce = base64.b64encode(os.urandom(24)).decode()
        now = self.clock()
        with self._lock:
            for n in [n for n, (t, _) in self._nonces.items() if now - t > NONCE_TTL_S]:
                del self._nonces[n]
            if len(self._nonces) >= MAX_NONCES:
                del self._nonces[min(self._nonces, key=lambda n: self._nonces[n][0])]
            self._nonces[nonce] = (now, 0)
        self.stats["challenge"] += 1
        ch = digest.Challenge(
            realm=self.realm, nonce=nonce, algorithm="MD5", qop=("auth-int",), opaque=None, stale=stale
        )
        return ch.to_header()

    def _unauthorized(self, reason: str, stale: bool = False):
        from aiohttp import web

        return web.HTTPUnauthorized(headers={"WWW-Authenticate": self.challenge(stale)}, text=reason + "\n")

    # --- verification -------------------------------------------------------------------------
    async def authenticate(self, request) -> NafPeer:
        """The peer of ``request``, or raise ``web.HTTPUnauthorized`` / ``web.HTTPForbidden``."""
        from aiohttp import web

        if not indicates_gba(request.headers.get("User-Agent", "")):
            self.stats["forbidden"] += 1
            raise web.HTTPForbidden(text="the User-Agent does not indicate GBA (product token 3gpp-gba)\n")
        header = request.headers.get("Authorization")
        if not header:
            raise self._unauthorized("authorization required")
        try:
            creds = digest.Credentials.parse(header)
        except digest.DigestError as exc:
            raise web.HTTPBadRequest(text=exc.message + "\n") from None
        body = await request.read()
        return self.verify(request.method, request.raw_path, creds, body)

    def verify(self, method: str, uri: str, creds: digest.Credentials, body: bytes) -> NafPeer:
        from aiohttp import web

        if creds.realm != self.realm:
            self.stats["forbidden"] += 1
            raise web.HTTPForbidden(text="wrong realm\n")
        if creds.qop != "auth-int":
            self.stats["forbidden"] += 1
            raise web.HTTPForbidden(text="qop must be auth-int\n")
        if creds.uri != uri:
            self.stats["forbidden"] += 1
            raise web.HTTPForbidden(text="digest-uri does not match the request\n")
        nc = int(creds.nc or "0", 16)
        with self._lock:
            entry = self._nonces.get(creds.nonce)
            fresh = entry is not None and self.clock() - entry[0] <= NONCE_TTL_S
            replay = entry is not None and fresh and nc <= entry[1]
        if not fresh:
            raise self._unauthorized("stale nonce", stale=True)
        if replay:
            self.stats["replay"] += 1
            log.warning("Ua replay: nonce reused with nc %s for %s", creds.nc, creds.username)
            raise self._unauthorized("nonce count replayed", stale=True)
        try:
            impi, ks = self.bsf.naf_key(creds.username, self.naf_id)
        except GbaError as exc:
            # 24.109 5.2.4: bootstrapping required -> 401 with a fresh challenge
            self.stats["unknown_btid"] += 1
            raise self._unauthorized(f"bootstrapping required ({exc.code})") from None
        if not digest.verify_response(creds, _password(ks), method, body):
            ks.zeroize()
            self.stats["forbidden"] += 1
            raise web.HTTPForbidden(text="wrong digest response\n")
        with self._lock:
            entry = self._nonces.get(creds.nonce)
            if entry is None or nc <= entry[1]:  # lost a race with an identical request
                self.stats["replay"] += 1
                raise self._unauthorized("nonce count replayed", stale=True)
            self._nonces[creds.nonce] = (entry[0], nc)
        self.stats["ok"] += 1
        return NafPeer(impi=impi, btid=creds.username, ks_naf=ks, credentials=creds)

    # --- aiohttp middleware -------------------------------------------------------------------
    def middleware(self):
        """An aiohttp middleware authenticating every request and signing every answer."""
        from aiohttp import web

        @web.middleware
        async def naf_digest(request, handler):
            peer = await self.authenticate(request)
            request[NAF_PEER] = peer
            try:
                resp = await handler(request)
                if isinstance(resp, web.Response):
                    body = resp.body if isinstance(resp.body, bytes) else b""
                    resp.headers["Authentication-Info"] = peer.authentication_info(body)
                return resp
            finally:
                peer.ks_naf.zeroize()

        return naf_digest
