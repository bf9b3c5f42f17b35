"""Ua HTTP Digest client (TS 24.109 5.2): requests to a NAF authenticated with GBA keys.

``NafClient(gba, http).request(method, url, body, content_type, naf_fqdn, ua_id=UA_KMS)``
answers the NAF's challenge (``realm="3GPP-bootstrapping@<naf fqdn>"``) with username =
B-TID and password = base64(Ks_NAF), ``qop=auth-int`` over the body. Every request carries
the ``3gpp-gba`` product token in its ``User-Agent`` (:data:`USER_AGENT`): it tells the NAF
that the UE can authenticate with a GBA key (TS 24.109 annex B.3, Table B.3-1), and a NAF may
refuse, unchallenged, a request without it. The last challenge
per NAF is reused with an increasing nonce count, so steady-state requests take one round
trip. On a ``401`` to an authenticated request the client retries once with a fresh nonce
when the NAF says ``stale=true``, and otherwise re-bootstraps once (the NAF does not know
the B-TID: 24.109 5.2.4) before giving up with ``gba.naf_unauthorized``.

Non-401 answers are returned as :class:`NafResponse`; a 2xx whose ``Authentication-Info``
does not verify raises ``gba.naf_auth_failed``.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ue_agent import __version__
from ue_agent.crypto import digest
from ue_agent.crypto.kdf import UA_KMS
from ue_agent.errors import GbaError
from ue_agent.httpmsg import Headers, HttpError, HttpRequester, request_target
from ue_agent.secret import Secret

if TYPE_CHECKING:
    from ue_agent.gba.client import GbaClient

log = logging.getLogger(__name__)

MAX_NAF_BODY = 1024 * 1024
#: the product token by which the UE indicates GBA-based HTTP Digest to a NAF (TS 24.109 B.3)
TOKEN_GBA = "3gpp-gba"
USER_AGENT = f"ue-agent/{__version__} {TOKEN_GBA}"


def _realm(naf_fqdn: str) -> str:
    """The realm a NAF's GBA challenge names (TS 24.109 5.2)."""
    return f"3GPP-bootstrapping@{naf_fqdn}"


@dataclass
class NafResponse:
    status: int
    headers: Headers  # case-insensitive; repeated fields via get_all
    body: bytes = field(repr=False)
    authenticated: bool = False  # Authentication-Info was present and verified


@dataclass
class _Nonce:
    challenge: digest.Challenge
    nc: int = 0


class NafClient:
    def __init__(
        self, gba: GbaClient, http: HttpRequester, *, timeout_s: float = 10.0, max_body: int = MAX_NAF_BODY
    ) -> None:
        self.gba = gba
        self.http = http
        self.timeout_s = timeout_s
        self.max_body = max_body
        self._nonces: dict[str, _Nonce] = {}
        #: HTTP requests sent, per NAF FQDN (tests, status)
        self.sent: dict[str, int] = {}

    async def request(
        self,
        method: str,
        url: str,
        body: bytes,
        content_type: str,
        naf_fqdn: str,
        ua_id: bytes = UA_KMS,
    ) -> NafResponse:
        # the FQDN goes into Ks_NAF as given (TS 33.220 B.3); only the nonce cache folds case
        cache_key = naf_fqdn.lower()
        uri = request_target(url)  # what the HTTP client puts on the request line
        realm = _realm(naf_fqdn)
        stale_retried = rebootstrapped = False
        auth: tuple[digest.Credentials, Secret] | None = None
        cached = self._nonces.get(cache_key)
        if cached is not None:
            auth = await self._answer(cached, method, uri, body, naf_fqdn, ua_id)
        try:
            for _ in range(4):
                status, headers, rbody = await self._send(method, url, body, content_type, naf_fqdn, auth)
                if status != 401:
                    return self._result(status, headers, rbody, auth)
                challenge = self._challenge(headers, realm)
                if auth is not None:
                    sent_btid = auth[0].username
                    if challenge.stale and not stale_retried:
                        stale_retried = True
                    elif not rebootstrapped:
                        log.info("NAF %s does not accept B-TID %s: bootstrapping again", naf_fqdn, sent_btid)
                        self.gba.invalidate(sent_btid)
                        await self.gba.bootstrap(force=True)
                        rebootstrapped = True
                    else:
                        raise GbaError(
                            "gba.naf_unauthorized", "the NAF refused a fresh bootstrap", naf=naf_fqdn
                        )
                    auth[1].zeroize()
                entry = self._nonces[cache_key] = _Nonce(challenge)
                auth = await self._answer(entry, method, uri, body, naf_fqdn, ua_id)
            raise GbaError("gba.naf_unauthorized", "the NAF keeps challenging", naf=naf_fqdn)
        finally:
            if auth is not None:
                auth[1].zeroize()

    def knows(self, naf_fqdn: str) -> bool:
        """Whether a challenge of ``naf_fqdn`` is cached: its next request is answered at once."""
        return naf_fqdn.lower() in self._nonces

    async def challenge(self, method: str, url: str, naf_fqdn: str) -> bool:
        """Fetch and cache ``naf_fqdn``'s challenge with a request that carries no credentials and
        no body (TS 24.109 B.3 steps 1-2), so that it can run while the key is still being made
        (a bootstrap) and the request itself then goes out answered. True when a challenge was
        cached; False when the NAF answered anything else (the request then goes the usual
        way and reports it). Raises ``gba.naf_unreachable`` as a request would."""
        status, headers, _ = await self._send(method, url, b"", "", naf_fqdn, None)
        if status != 401:
            return False
        try:
            challenge = self._challenge(headers, _realm(naf_fqdn))
        except GbaError:
            return False  # the request meets the same answer and words it
        self._nonces[naf_fqdn.lower()] = _Nonce(challenge)
        return True

    def forget(self, naf_fqdn: str | None = None) -> None:
        """Drop cached nonces (all, or one NAF's)."""
        if naf_fqdn is None:
            self._nonces.clear()
        else:
            self._nonces.pop(naf_fqdn.lower(), None)

    # --- pieces -------------------------------------------------------------------------------
    async def _answer(
        self, entry: _Nonce, method: str, uri: str, body: bytes, naf_fqdn: str, ua_id: bytes
    ) -> tuple[digest.Credentials, Secret]:
        import os

        btid, key = await self.gba.ks_naf(naf_fqdn, ua_id)
        password = Secret(base64.b64encode(key.reveal()), "Ua password")
        key.zeroize()
        entry.nc += 1
        ch = entry.challenge
        creds = digest.Credentials(
            username=btid,
            realm=ch.realm,
            nonce=ch.nonce,
            uri=uri,
            response="",
            algorithm=ch.algorithm,
            qop="auth-int",
            nc=f"{entry.nc:08x}",
            cnonce=os.urandom(16).hex(),
            opaque=ch.opaque,
        )
        import dataclasses

        creds = dataclasses.replace(creds, response=digest.compute_response(creds, password, method, body))
        return creds, password

    def _challenge(self, headers: Headers, realm: str) -> digest.Challenge:
        """The Digest challenge for ``realm`` among the 401's WWW-Authenticate fields.

        A NAF may offer several (other schemes or realms, RFC 7235 4.1): the one with the
        3GPP-bootstrapping realm is taken; Digest challenges only for other realms are
        ``gba.wrong_realm``.
        """
        getter = getattr(headers, "get_all", None)
        values = getter("WWW-Authenticate") if getter else [headers.get("WWW-Authenticate")]
        texts = [v for v in values if isinstance(v, str) and v]
        if not texts:
            raise GbaError("gba.bad_response", "NAF answered 401 without WWW-Authenticate")
        parsed: list[digest.Challenge] = []
        first_error = ""
        for value in texts:
            try:
                parsed.append(digest.Challenge.parse(value))
            except digest.DigestError as exc:
                first_error = first_error or exc.message
        if not parsed:
            raise GbaError("gba.bad_response", f"NAF WWW-Authenticate: {first_error}")
        ch = next((c for c in parsed if c.realm.lower() == realm.lower()), None)  # DNS names fold case
        if ch is None:
            raise GbaError(
                "gba.wrong_realm",
                "the NAF's realm is not 3GPP-bootstrapping@<its FQDN>",
                realm=parsed[0].realm,
                expected=realm,
            )
        if "auth-int" not in ch.qop:
            raise GbaError("gba.bad_response", 'NAF challenge without qop="auth-int"')
        return ch

    def _result(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        auth: tuple[digest.Credentials, Secret] | None,
    ) -> NafResponse:
        verified = False
        info = headers.get("Authentication-Info")
        if auth is not None and info and 200 <= status < 300:
            try:
                verified = digest.verify_rspauth(info, auth[0], auth[1], body)
            except digest.DigestError:
                verified = False
            if not verified:
                raise GbaError("gba.naf_auth_failed", "the NAF's rspauth does not verify", status=status)
        return NafResponse(status, headers, body, verified)

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes,
        content_type: str,
        naf_fqdn: str,
        auth: tuple[digest.Credentials, Secret] | None,
    ) -> tuple[int, Headers, bytes]:
        headers: dict[str, str] = {"Accept": "*/*", "User-Agent": USER_AGENT}
        if body:
            headers["Content-Type"] = content_type
        if auth is not None:
            headers["Authorization"] = auth[0].to_header()
        self.sent[naf_fqdn] = self.sent.get(naf_fqdn, 0) + 1
        try:
            resp = await self.http.request(
                method, url, headers=headers, body=body, timeout_s=self.timeout_s, max_body=self.max_body
            )
        except HttpError as exc:
            if exc.reason == "too_large":
                raise GbaError("gba.bad_response", f"NAF answer larger than {self.max_body} octets") from None
            if exc.reason == "timeout":
                raise GbaError(
                    "gba.naf_unreachable", f"no answer from the NAF within {self.timeout_s:g} s", url=url
                ) from None
            raise GbaError("gba.naf_unreachable", f"NAF unreachable ({exc.reason}: {exc})", url=url) from None
        return resp.status, resp.headers, resp.body
