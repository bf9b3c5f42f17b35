"""Media streams described in a TRANSFER_INIT: the CS ID map, SP payloads and the keys per crypto session.

SRTP streams use the SRTP-ID map (policy, SSRC, ROC); as soon as one TLS crypto session
(TCP/TLS/MSRP, TCP/TLS/BFCP, TS 33.328 Annex H) is present the GENERIC-ID map is used, with
prot type SRTP (session data = SSRC || ROC) or TLS (session data = the SDP proto). SSRC 0
means "not known yet" and gives SrtpKeys(ssrc=None).

Keys per crypto session (RFC 3830 4.1.3): TEK and salt from the session TGK with the
crypto session's cs_id (1..n in map order), the CSB ID, and RAND = RANDRi || RANDRr
(RANDRi alone for group tickets). SRTP: master key = TEK, master salt = salt. TLS: PSK =
TEK (32 octets), identity = base64(CSB ID || cs_id || RANDRi[:7]) (docs/kms.md).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ue_agent.crypto import mikey_prf
from ue_agent.errors import MikeyError
from ue_agent.kms import mikey
from ue_agent.media.keys import MediaKeys, SrtpKeys, TlsPskKeys
from ue_agent.secret import Secret

TLS_PROTOS = ("TCP/TLS/MSRP", "TCP/TLS/BFCP")
TLS_PSK_LEN = 32

# SP parameter types (RFC 3830 6.10.1) and values.
SP_ENCR_ALG = 0
SP_ENCR_KEY_LEN = 1
SP_AUTH_ALG = 2
SP_AUTH_KEY_LEN = 3
SP_SALT_LEN = 4
SP_AUTH_TAG_LEN = 11
_SRTP_SUITES = {  # suite -> auth tag length; all AES-CM-128 / HMAC-SHA-1, 14-octet salt
    "AES_CM_128_HMAC_SHA1_80": 10,
    "AES_CM_128_HMAC_SHA1_32": 4,
}


@dataclass(frozen=True)
class SrtpStream:
    suite: str = "AES_CM_128_HMAC_SHA1_80"
    ssrc: int | None = None
    roc: int = 0

    def __post_init__(self) -> None:
        if self.suite not in _SRTP_SUITES:
            raise MikeyError("mikey.unsupported", f"SRTP suite {self.suite} cannot be keyed over MIKEY here")
        if self.ssrc is not None and not 0 < self.ssrc <= 0xFFFFFFFF:
            raise MikeyError("mikey.malformed", "SSRC must be 1..2^32-1 (or None)")
        if not 0 <= self.roc <= 0xFFFFFFFF:
            raise MikeyError("mikey.malformed", "ROC must be 32 bits")


@dataclass(frozen=True)
class TlsStream:
    proto: str = "TCP/TLS/MSRP"

    def __post_init__(self) -> None:
        if self.proto not in TLS_PROTOS:
            raise MikeyError("mikey.unsupported", f"TLS crypto session for {self.proto!r}")


Stream = SrtpStream | TlsStream


def _sp_for(policy_no: int, s: Stream) -> mikey.SecurityPolicy:
    if isinstance(s, TlsStream):
        return mikey.SecurityPolicy(policy_no, mikey.PROT_TLS, ((SP_ENCR_KEY_LEN, bytes([TLS_PSK_LEN])),))
    params = (
        (SP_ENCR_ALG, b"\x01"),
        (SP_ENCR_KEY_LEN, b"\x10"),
        (SP_AUTH_ALG, b"\x01"),
        (SP_AUTH_KEY_LEN, b"\x14"),
        (SP_SALT_LEN, b"\x0e"),
        (SP_AUTH_TAG_LEN, bytes([_SRTP_SUITES[s.suite]])),
    )
    return mikey.SecurityPolicy(policy_no, mikey.PROT_SRTP, params)


def describe(streams: list[Stream]) -> tuple[int, tuple, list[mikey.SecurityPolicy]]:
    """(map type, CS ID map, SP payloads) for a TRANSFER_INIT."""
    if not streams or len(streams) > 255:
        raise MikeyError("mikey.malformed", "a TRANSFER_INIT needs 1..255 streams")
    sps = [_sp_for(i, s) for i, s in enumerate(streams)]
    if all(isinstance(s, SrtpStream) for s in streams):
        cs_map = tuple(mikey.SrtpCs(i, s.ssrc or 0, s.roc) for i, s in enumerate(streams))  # type: ignore[union-attr]
        return mikey.MAP_SRTP_ID, cs_map, sps
    entries = []
    for i, s in enumerate(streams):
        if isinstance(s, SrtpStream):
            data = (s.ssrc or 0).to_bytes(4, "big") + s.roc.to_bytes(4, "big")
            entries.append(mikey.GenericCs(i + 1, mikey.PROT_SRTP, (i,), data))
        else:
            entries.append(mikey.GenericCs(i + 1, mikey.PROT_TLS, (i,), s.proto.encode()))
    return mikey.MAP_GENERIC_ID, tuple(entries), sps


def _suite_from_sp(sp: mikey.SecurityPolicy | None) -> str:
    if sp is None or sp.prot_type != mikey.PROT_SRTP:
        raise MikeyError("mikey.malformed", "SRTP crypto session without an SRTP policy")
    expect = {SP_ENCR_ALG: b"\x01", SP_ENCR_KEY_LEN: b"\x10", SP_AUTH_ALG: b"\x01", SP_SALT_LEN: b"\x0e"}
    for t, v in expect.items():
        got = sp.param(t)
        if got is not None and got != v:
            raise MikeyError("mikey.unsupported", "SRTP policy other than AES-CM-128/HMAC-SHA-1", param=t)
    tag = sp.param(SP_AUTH_TAG_LEN)
    for suite, tlen in _SRTP_SUITES.items():
        if tag == bytes([tlen]):
            return suite
    raise MikeyError("mikey.unsupported", "SRTP authentication tag length")


def parse(msg: mikey.Message) -> list[Stream]:
    """The streams a received TRANSFER_INIT describes (inverse of :func:`describe`)."""
    h = msg.header
    policies = {sp.policy_no: sp for sp in msg.all(mikey.SecurityPolicy)}
    out: list[Stream] = []
    if not h.cs_map:
        raise MikeyError("mikey.malformed", "TRANSFER_INIT without crypto sessions")
    for i, cs in enumerate(h.cs_map):
        if isinstance(cs, mikey.SrtpCs):
            suite = _suite_from_sp(policies.get(cs.policy_no))
            out.append(SrtpStream(suite, cs.ssrc or None, cs.roc))
            continue
        if cs.cs_id != i + 1 or len(cs.policies) != 1:
            raise MikeyError("mikey.malformed", "GENERIC-ID entries must be numbered 1..n with one policy")
        sp = policies.get(cs.policies[0])
        if cs.prot_type == mikey.PROT_SRTP:
            if len(cs.session_data) != 8:
                raise MikeyError("mikey.malformed", "SRTP session data must be SSRC || ROC")
            ssrc = int.from_bytes(cs.session_data[:4], "big")
            out.append(
                SrtpStream(_suite_from_sp(sp), ssrc or None, int.from_bytes(cs.session_data[4:], "big"))
            )
        elif cs.prot_type == mikey.PROT_TLS:
            if sp is None or sp.prot_type != mikey.PROT_TLS:
                raise MikeyError("mikey.malformed", "TLS crypto session without a TLS policy")
            try:
                out.append(TlsStream(cs.session_data.decode("ascii")))
            except UnicodeDecodeError:
                raise MikeyError("mikey.malformed", "TLS session data is not a proto name") from None
        else:
            raise MikeyError("mikey.unsupported", "crypto session protocol", prot_type=cs.prot_type)
    return out


def keys_for(
    streams: list[Stream], tgk: Secret, csb_id: int, rand_i: bytes, rand_r: bytes | None, prf_func: int
) -> list[MediaKeys]:
    """The media keys of every crypto session, in stream order."""
    rand = rand_i + (rand_r or b"")
    k = tgk.reveal()
    out: list[MediaKeys] = []
    for i, s in enumerate(streams):
        cs_id = i + 1
        if isinstance(s, SrtpStream):
            out.append(
                SrtpKeys(
                    s.suite,
                    Secret(mikey_prf.tek(k, cs_id, csb_id, rand, 16, prf_func), "srtp-master-key"),
                    Secret(mikey_prf.salt(k, cs_id, csb_id, rand, 14, prf_func), "srtp-master-salt"),
                    s.ssrc,
                    s.roc,
                )
            )
        else:
            ident = base64.b64encode(csb_id.to_bytes(4, "big") + bytes([cs_id]) + rand_i[:7]).decode()
            psk = Secret(mikey_prf.tek(k, cs_id, csb_id, rand, TLS_PSK_LEN, prf_func), "tls-psk")
            out.append(TlsPskKeys(ident, psk))
    return out
