"""Media streams as crypto sessions: the GENERIC-ID map (RFC 6043 6.1.1), SP payloads and the keys.

Ticket transfer uses the GENERIC-ID map only (RFC 6043 6.1: SRTP-ID SHALL NOT be used). One
SRTP media stream is two crypto sessions, one per direction, each with its own SSRC and its
own CS ID, so each direction has its own TEK and no key stream is ever used twice:

- CS n: the initiator's sending SSRC, session data supplied by the initiator;
- CS n+1: the responder's sending SSRC, session data left empty (length 0) by the initiator
  and filled in by the responder in TRANSFER_RESP (RFC 6043 4.2.2.3), with the SPI.

Both CSs of a stream name the stream's SP (policy_no = stream index). A TLS crypto session
(MSRP, BFCP: one PSK for both directions) is one CS of prot type TLS (private use 241).
SRTP session data is 0, 4 (SSRC, S=0) or 10 octets (SSRC || ROC || SEQ, S=1) (6.1.1).

Keys (RFC 6043 5.1.3): TEK and salt of each CS from the TGK (or TGK' with key forking) with
the CS ID, RANDRi (H flag) and RANDRr (G flag). SRTP: master key = TEK, master salt = salt.
TLS: PSK = TEK; the PSK identity is TS 33.328's (:mod:`ue_agent.kms.ts33328`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ue_agent.crypto import mikey_prf
from ue_agent.errors import MikeyError
from ue_agent.kms import mikey, ts33328
from ue_agent.media.keys import MediaKeys, SrtpKeys, TlsPskKeys
from ue_agent.secret import Secret

TLS_PROTOS = ("TCP/TLS/MSRP", "TCP/TLS/BFCP")

# SP parameter types (RFC 3830 6.10.1) and the values for AES-CM-128 / HMAC-SHA-1.
SP_ENCR_ALG = 0
SP_ENCR_KEY_LEN = 1
SP_AUTH_ALG = 2
SP_AUTH_KEY_LEN = 3
SP_SALT_LEN = 4
SP_AUTH_TAG_LEN = 11
_SRTP_SUITES = {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4}  # suite -> tag length


def _bad(msg: str, **details: object) -> MikeyError:
    return MikeyError("mikey.malformed", msg, **details)


@dataclass(frozen=True)
class SrtpStream:
    """An SRTP stream; ``ssrc``/``roc`` are what this side sends with (None: chosen at random)."""

    suite: str = "AES_CM_128_HMAC_SHA1_80"
    ssrc: int | None = None
    roc: int = 0

    def __post_init__(self) -> None:
        if self.suite not in _SRTP_SUITES:
            raise MikeyError("mikey.unsupported", f"SRTP suite {self.suite} cannot be keyed over MIKEY here")
        if self.ssrc is not None and not 0 <= self.ssrc <= 0xFFFFFFFF:
            raise _bad("SSRC must be 32 bits")
        if not 0 <= self.roc <= 0xFFFFFFFF:
            raise _bad("ROC must be 32 bits")


@dataclass(frozen=True)
class TlsStream:
    proto: str = "TCP/TLS/MSRP"

    def __post_init__(self) -> None:
        if self.proto not in TLS_PROTOS:
            raise MikeyError("mikey.unsupported", f"TLS crypto session for {self.proto!r}")


Stream = SrtpStream | TlsStream


@dataclass
class StreamKeyPair:
    """One media stream's keys from this side's view: ``tx`` protects what we send."""

    tx: MediaKeys
    rx: MediaKeys | None = None

    def zeroize(self) -> None:
        self.tx.zeroize()
        if self.rx is not None:
            self.rx.zeroize()

    def __repr__(self) -> str:
        return f"<StreamKeyPair {type(self.tx).__name__}>"


@dataclass(frozen=True)
class StreamCs:
    """Where a stream sits in the CS ID map: its policy and the CS IDs of both directions."""

    stream: Stream
    policy_no: int  # NO_POLICY until the responder assigns one
    i_cs: int | None  # the initiator sends on this CS (SRTP), or the TLS CS
    r_cs: int | None  # the responder sends on this CS (SRTP)


def _srtp_data(ssrc: int, roc: int) -> tuple[bytes, bool]:
    if roc:
        return ssrc.to_bytes(4, "big") + roc.to_bytes(4, "big") + b"\x00\x00", True
    return ssrc.to_bytes(4, "big"), False


def srtp_session(cs: mikey.GenericCs) -> tuple[int, int] | None:
    """(SSRC, ROC) of SRTP session data, None when absent (RFC 6043 6.1.1)."""
    n = len(cs.session_data)
    if n == 0:
        return None
    if n == 4 and not cs.s_flag:
        return int.from_bytes(cs.session_data, "big"), 0
    if n == 10 and cs.s_flag:
        d = cs.session_data
        return int.from_bytes(d[:4], "big"), int.from_bytes(d[4:8], "big")
    raise _bad("SRTP session data is 0, 4 (S=0) or 10 (S=1) octets", cs_id=cs.cs_id, length=n)


def random_ssrc() -> int:
    return int.from_bytes(os.urandom(4), "big")


def _sp_for(policy_no: int, s: Stream, psk_len: int) -> mikey.SecurityPolicy:
    if isinstance(s, TlsStream):
        return mikey.SecurityPolicy(policy_no, mikey.PROT_TLS, ((SP_ENCR_KEY_LEN, bytes([psk_len])),))
    params = (
        (SP_ENCR_ALG, b"\x01"),
        (SP_ENCR_KEY_LEN, b"\x10"),
        (SP_AUTH_ALG, b"\x01"),
        (SP_AUTH_KEY_LEN, b"\x14"),
        (SP_SALT_LEN, b"\x0e"),
        (SP_AUTH_TAG_LEN, bytes([_SRTP_SUITES[s.suite]])),
    )
    return mikey.SecurityPolicy(policy_no, mikey.PROT_SRTP, params)


def supported_srtp_policy(policy_no: int) -> mikey.SecurityPolicy:
    """The SRTP policy this agent supports (for an Error message, RFC 6043 5.4)."""
    return _sp_for(policy_no, SrtpStream(), 32)


def describe(
    streams: list[Stream], spi: bytes, psk_len: int, *, one_way: bool = False
) -> tuple[tuple[mikey.GenericCs, ...], list[mikey.SecurityPolicy], list[StreamCs]]:
    """The initiator's GENERIC-ID map, SP payloads and layout for a TRANSFER_INIT; ``one_way``:
    no crypto session for the responder's direction (no TRANSFER_RESP to fill it in, F flag clear)."""
    if not streams or len(streams) > 100:
        raise _bad("a TRANSFER_INIT keys 1..100 streams")
    entries: list[mikey.GenericCs] = []
    layout: list[StreamCs] = []
    sps: list[mikey.SecurityPolicy] = []
    for no, s in enumerate(streams):
        sps.append(_sp_for(no, s, psk_len))
        cs = len(entries) + 1
        if isinstance(s, TlsStream):
            entries.append(mikey.GenericCs(cs, mikey.PROT_TLS, (no,), s.proto.encode(), spi))
            layout.append(StreamCs(s, no, cs, None))
            continue
        ssrc = random_ssrc() if s.ssrc is None else s.ssrc
        data, sflag = _srtp_data(ssrc, s.roc)
        entries.append(mikey.GenericCs(cs, mikey.PROT_SRTP, (no,), data, spi, sflag))
        if not one_way:
            entries.append(mikey.GenericCs(cs + 1, mikey.PROT_SRTP, (no,), b"", spi))
        layout.append(StreamCs(SrtpStream(s.suite, ssrc, s.roc), no, cs, None if one_way else cs + 1))
    return tuple(entries), sps, layout


def _suite_from_sp(sp: mikey.SecurityPolicy | None) -> str:
    if sp is None or sp.prot_type != mikey.PROT_SRTP:
        raise _bad("SRTP crypto session without an SRTP policy")
    expect = {SP_ENCR_ALG: b"\x01", SP_ENCR_KEY_LEN: b"\x10", SP_AUTH_ALG: b"\x01", SP_SALT_LEN: b"\x0e"}
    for t, v in expect.items():
        got = sp.param(t)
        if got is not None and got != v:
            raise MikeyError(
                "mikey.unsupported",
                "SRTP policy other than AES-CM-128/HMAC-SHA-1",
                param=t,
                policy_no=sp.policy_no,
            )
    tag = sp.param(SP_AUTH_TAG_LEN)
    if tag is None:
        tag = b"\x0a"  # RFC 3830 6.10.1: the default auth tag length is 80 bits
    for suite, tlen in _SRTP_SUITES.items():
        if tag == bytes([tlen]):
            return suite
    raise MikeyError(
        "mikey.unsupported", "SRTP authentication tag length", param=SP_AUTH_TAG_LEN, policy_no=sp.policy_no
    )


NO_POLICY = -1  # a crypto session offered with #P = 0: the responder provides the policy (6.1.1)


def _pick_srtp(cs: mikey.GenericCs, policies: dict[int, mikey.SecurityPolicy]) -> tuple[int, str]:
    """The first offered policy we support ("one of the suggested policies SHOULD be chosen", 6.1.1)."""
    if not cs.policies:
        return NO_POLICY, "AES_CM_128_HMAC_SHA1_80"
    first: MikeyError | None = None
    for no in cs.policies:
        try:
            return no, _suite_from_sp(policies.get(no))
        except MikeyError as e:
            first = first or e
    assert first is not None
    raise first


def _entries(msg: mikey.Message) -> list[mikey.GenericCs]:
    h = msg.header
    if h.cs_map_type != mikey.MAP_GENERIC_ID:
        raise MikeyError(
            "mikey.unsupported",
            "ticket transfer uses the GENERIC-ID map (RFC 6043 6.1)",
            map_type=h.cs_map_type,
        )
    out = [cs for cs in h.cs_map if isinstance(cs, mikey.GenericCs)]
    if not out:
        raise _bad(f"{msg.name} without crypto sessions")
    if len({cs.cs_id for cs in out}) != len(out):
        raise _bad("two crypto sessions share a CS ID")
    return out


def layout(msg: mikey.Message) -> list[StreamCs]:
    """The streams of a received TRANSFER_INIT (inverse of :func:`describe`, docs/kms.md):
    an SRTP CS with session data followed by one without and with the same policies is one
    stream (initiator's, responder's direction); any other SRTP CS is a one-way stream."""
    policies = {sp.policy_no: sp for sp in msg.all(mikey.SecurityPolicy)}
    entries = _entries(msg)
    out: list[StreamCs] = []
    i = 0
    while i < len(entries):
        cs = entries[i]
        no = cs.policies[0] if cs.policies else NO_POLICY
        sp = policies.get(no)
        if cs.prot_type == mikey.PROT_TLS:
            if cs.policies and (sp is None or sp.prot_type != mikey.PROT_TLS):
                raise _bad("TLS crypto session without a TLS policy")
            proto = cs.session_data.decode("ascii", "replace") or TLS_PROTOS[0]
            out.append(
                StreamCs(TlsStream(proto if proto in TLS_PROTOS else TLS_PROTOS[0]), no, cs.cs_id, None)
            )
            i += 1
            continue
        if cs.prot_type != mikey.PROT_SRTP:
            raise MikeyError("mikey.unsupported", "crypto session protocol", prot_type=cs.prot_type)
        no, suite = _pick_srtp(cs, policies)
        own = srtp_session(cs)
        nxt = entries[i + 1] if i + 1 < len(entries) else None
        if (
            own is not None
            and nxt is not None
            and nxt.prot_type == mikey.PROT_SRTP
            and nxt.policies == cs.policies
            and srtp_session(nxt) is None
        ):
            out.append(StreamCs(SrtpStream(suite, own[0], own[1]), no, cs.cs_id, nxt.cs_id))
            i += 2
        elif own is not None:
            out.append(StreamCs(SrtpStream(suite, own[0], own[1]), no, cs.cs_id, None))
            i += 1
        else:
            out.append(StreamCs(SrtpStream(suite), no, None, cs.cs_id))
            i += 1
    return out


def respond_map(
    msg: mikey.Message, spi: bytes, own: list[SrtpStream | None] | None = None, psk_len: int = 32
) -> tuple[
    tuple[mikey.GenericCs, ...], dict[int, tuple[int, int]], list[StreamCs], list[mikey.SecurityPolicy]
]:
    """The responder's CS ID map for TRANSFER_RESP (RFC 6043 4.2.2.3): exactly one policy per
    CS, our SSRC (``own`` per stream, else random) in every SRTP CS the initiator left without
    session data, an SPI where none was given, and a CS of our own (#CS updated) for an SRTP
    stream the initiator offered in its direction only. Returns the map, {cs_id: (SSRC, ROC)}
    of the CSs we send on, the streams with their CS IDs, and the SP payloads we add for the
    crypto sessions offered without a policy (#P = 0, 6.1.1)."""
    plan = layout(msg)
    entries = list(_entries(msg))
    wanted: dict[int, SrtpStream | None] = {}
    next_id = max(cs.cs_id for cs in entries) + 1
    added: list[mikey.SecurityPolicy] = []
    next_no = max([sp.policy_no for sp in msg.all(mikey.SecurityPolicy)] + [-1]) + 1
    for k, st in enumerate(plan):
        if st.policy_no == NO_POLICY:
            if next_no > 0xFF:
                raise _bad("no policy number left for a crypto session offered without policy")
            added.append(_sp_for(next_no, st.stream, psk_len))
            plan[k] = st = StreamCs(st.stream, next_no, st.i_cs, st.r_cs)
            next_no += 1
    chosen = {c: st.policy_no for st in plan for c in (st.i_cs, st.r_cs) if c is not None}
    for k, st in enumerate(plan):
        if not isinstance(st.stream, SrtpStream):
            continue
        if st.r_cs is None:
            if next_id > 0xFF:
                raise _bad("no CS ID left for the responder's direction")
            entries.append(mikey.GenericCs(next_id, mikey.PROT_SRTP, (st.policy_no,), b"", b""))
            plan[k] = st = StreamCs(st.stream, st.policy_no, st.i_cs, next_id)
            next_id += 1
        wanted[st.r_cs] = own[k] if own is not None and k < len(own) else None  # type: ignore[index]
    filled: dict[int, tuple[int, int]] = {}
    out: list[mikey.GenericCs] = []
    for cs in entries:
        data, sflag = cs.session_data, cs.s_flag
        if cs.prot_type == mikey.PROT_SRTP and not data:
            s = wanted.get(cs.cs_id)
            ssrc = s.ssrc if s is not None and s.ssrc is not None else random_ssrc()
            roc = s.roc if s is not None else 0
            data, sflag = _srtp_data(ssrc, roc)
            filled[cs.cs_id] = (ssrc, roc)
        no = chosen.get(cs.cs_id)
        pol = (no,) if no is not None else cs.policies[:1]
        out.append(mikey.GenericCs(cs.cs_id, cs.prot_type, pol, data, cs.spi or spi, sflag))
    return tuple(out), filled, plan, added


def check_response_map(offer: mikey.Message, answer: mikey.Message) -> dict[int, mikey.GenericCs]:
    """The TRANSFER_RESP map by CS ID: every offered CS present with one policy, session data
    (SRTP) and an SPI (RFC 6043 4.2.2.3, 6.1.1); CSs the responder added are ignored."""
    got = {cs.cs_id: cs for cs in _entries(answer)}
    for cs in _entries(offer):
        r = got.get(cs.cs_id)
        if r is None:
            raise _bad("TRANSFER_RESP dropped a crypto session", cs_id=cs.cs_id)
        if len(r.policies) != 1 or (cs.policies and r.policies[0] not in cs.policies):
            raise _bad("TRANSFER_RESP must name exactly one offered policy per CS", cs_id=cs.cs_id)
        if r.prot_type != cs.prot_type or not r.spi:
            raise _bad("TRANSFER_RESP changed the protocol or gave no SPI", cs_id=cs.cs_id)
        if r.prot_type == mikey.PROT_SRTP and srtp_session(r) is None:
            raise _bad("TRANSFER_RESP must give SRTP session data for every CS", cs_id=cs.cs_id)
    return got


@dataclass(frozen=True)
class Derivation:
    """The inputs of RFC 6043 5.1.3 for one transfer."""

    tgk: Secret
    rand_i: bytes | None  # None unless the H flag is set
    rand_r: bytes | None  # None unless the G flag is set
    prf_func: int
    csb_id: int
    rand_i_full: bytes  # RANDRi as sent (for the TLS PSK identity)
    psk_len: int


def _tek(d: Derivation, cs_id: int, n: int) -> bytes:
    return mikey_prf.from_tgk(d.tgk.reveal(), mikey_prf.TEK_CONST, cs_id, d.rand_i, d.rand_r, n, d.prf_func)


def _srtp_keys(d: Derivation, suite: str, cs_id: int, ssrc: int, roc: int) -> SrtpKeys:
    salt = mikey_prf.from_tgk(d.tgk.reveal(), mikey_prf.SALT_CONST, cs_id, d.rand_i, d.rand_r, 14, d.prf_func)
    return SrtpKeys(
        suite, Secret(_tek(d, cs_id, 16), "srtp-master-key"), Secret(salt, "srtp-master-salt"), ssrc, roc
    )


def keys_for(
    plan: list[StreamCs], sessions: dict[int, tuple[int, int]], d: Derivation, initiator: bool
) -> list[StreamKeyPair]:
    """Every stream's keys from this side's view; ``sessions`` gives (SSRC, ROC) per CS ID."""
    out: list[StreamKeyPair] = []
    for st in plan:
        if isinstance(st.stream, TlsStream):
            assert st.i_cs is not None
            ident = ts33328.tls_psk_identity(d.csb_id, st.i_cs, d.rand_i_full)
            out.append(StreamKeyPair(TlsPskKeys(ident, Secret(_tek(d, st.i_cs, d.psk_len), "tls-psk"))))
            continue
        suite = st.stream.suite
        i_keys = r_keys = None
        if st.i_cs is not None:
            i_keys = _srtp_keys(d, suite, st.i_cs, *sessions[st.i_cs])
        if st.r_cs is not None:
            r_keys = _srtp_keys(d, suite, st.r_cs, *sessions[st.r_cs])
        tx, rx = (i_keys, r_keys) if initiator else (r_keys, i_keys)
        if tx is None:
            raise MikeyError("mikey.unsupported", "an SRTP stream without a crypto session of ours")
        out.append(StreamKeyPair(tx, rx))
    return out
