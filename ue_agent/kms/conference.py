"""Conferences through a focus (MRFC/MRFP) over MIKEY-TICKET, sans-IO (RFC 6043 4.2.2, 5.2, 9).

TR 33.829 5.1.3 / 5.3.2 put a focus between the members of a conference: each member runs one
Ticket Transfer with the focus, the member calling the focus (dial-in) or the focus calling the
member (dial-out). RFC 6043 gives the focus what it needs to hand every member the same group
keys over these pairwise exchanges:

- dial-in, the focus answers: "Responder-specified keys MAY be used" -- a KEMAC in TRANSFER_RESP,
  "handled exactly as if it was sent in a later CSB update" (4.2.2.3), its encr_key from the MPK
  that protects the TRANSFER_RESP (MPKi, or MPKr' with key forking) (5.2);
- dial-out, the focus initiates: a KEMAC in TRANSFER_INIT, encr_key from MPKi (4.2.2.1); with
  key forking "the group key needs to be sent in a KEMAC" (9.1);
- re-key on join and leave: a CSB update (5.2), a TRANSFER_INIT with the same CSB ID, a new T and
  a new KEMAC, protected "with the same keys ... that protected the last message" of the initial
  exchange; the focus may start it as initiator or as responder (5.2);
- SSRCs: "the Responder MAY update Session Data ... provided by the Initiator" (4.2.2.3) and a CSB
  update negotiates the crypto sessions again: the focus keeps every member's SSRC unique, since
  all members send under one group master key (RFC 3711 9.1: the key stream is a function of the
  SSRC, so two senders sharing a master key need distinct SSRCs).

The group key of an SRTP stream is a TEK+SALT key data (RFC 3830 6.13, type 3): master key and
master salt, the same for every member; every SRTP crypto session of that stream names its SPI.
The SPI names the key generation (docs/kms.md). A TLS crypto session (BFCP floor control with
the focus, MSRP) keeps the pairwise PSK derived from the ticket's TGK (5.1.3, TS 33.328 Annex H):
floor control runs between one member and the focus only.

The member's side: :func:`member_after_complete` (dial-in), :func:`member_after_answer`
(dial-out), :func:`read_update`. The focus's side: :func:`focus_answer`, :func:`focus_offer`,
:func:`focus_after_complete`, :func:`build_update`. Every choice: docs/kms.md.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field

from ue_agent.crypto import mikey_prf
from ue_agent.errors import KmsError, MikeyError
from ue_agent.kms import ids, mikey, protect, session, streams
from ue_agent.media.keys import SRTP_SUITES, SrtpKeys
from ue_agent.secret import Secret

#: the SPI of a group key: 3 octets of key generation, 1 octet of SRTP stream number (docs/kms.md)
SPI_LEN = 4
MAX_GENERATION = 0xFFFFFF


def group_spi(generation: int, stream_no: int) -> bytes:
    if not 0 <= generation <= MAX_GENERATION or not 0 <= stream_no <= 0xFF:
        raise ValueError("generation is 24 bits, stream number 8 bits")
    return ((generation << 8) | stream_no).to_bytes(SPI_LEN, "big")


def generation_of(spi: bytes) -> int:
    """The key generation an SPI names (its first three octets, as the lab focus writes them)."""
    return int.from_bytes(spi[:3], "big") if len(spi) == SPI_LEN else int.from_bytes(spi, "big")


# ---------------------------------------------------------------------------- state


@dataclass(repr=False)
class Link:
    """One member <-> focus Ticket Transfer after its initial exchange, kept by both sides for
    the CSB updates (5.2): its CSB ID, the keys of the initial exchange's last message, the
    identities its MACs cover (Table 5.2) and the crypto sessions as last negotiated."""

    csb_id: int
    prf_func: int
    keys: protect.MessageKeys
    id_i: bytes
    id_r: bytes
    plan: list[streams.StreamCs]
    cs_map: tuple[mikey.GenericCs, ...]
    #: this side's role in the initial exchange
    initiator: bool
    #: NTP-64 of the newest message accepted or sent on this link (updates must be newer)
    last_t: int = 0
    generation: int | None = None

    def own_cs(self, st: streams.StreamCs) -> int | None:
        return st.i_cs if self.initiator else st.r_cs

    def peer_cs(self, st: streams.StreamCs) -> int | None:
        return st.r_cs if self.initiator else st.i_cs

    def ssrcs(self) -> dict[int, int]:
        """{CS ID: SSRC} of every SRTP crypto session with session data."""
        return {c: s[0] for c, s in _srtp_sessions(self.cs_map).items()}

    def zeroize(self) -> None:
        self.keys.zeroize()

    def __repr__(self) -> str:
        return f"<Link csb_id={self.csb_id:#010x} generation={self.generation}>"


@dataclass(repr=False)
class Generation:
    """One generation of a conference's group keys (the focus's): TEK+SALT per SRTP stream number."""

    number: int
    keys: dict[int, tuple[Secret, Secret]] = field(default_factory=dict)

    def key(self, stream_no: int, suite: str) -> tuple[Secret, Secret]:
        if stream_no not in self.keys:
            klen, slen = SRTP_SUITES[suite]
            self.keys[stream_no] = (
                Secret(os.urandom(klen), "group-tek"),
                Secret(os.urandom(slen), "group-salt"),
            )
        return self.keys[stream_no]

    def zeroize(self) -> None:
        for k, s in self.keys.values():
            k.zeroize()
            s.zeroize()

    def __repr__(self) -> str:
        return f"<Generation {self.number} streams={sorted(self.keys)}>"


# ---------------------------------------------------------------------------- shared helpers


def _srtp_numbers(plan: list[streams.StreamCs]) -> dict[int, int]:
    """plan index -> SRTP stream number (the n-th SRTP stream of a member shares key n)."""
    out: dict[int, int] = {}
    for k, st in enumerate(plan):
        if isinstance(st.stream, streams.SrtpStream):
            out[k] = len(out)
    return out


def _with_spis(
    cs_map: tuple[mikey.GenericCs, ...], plan: list[streams.StreamCs], generation: int
) -> tuple[mikey.GenericCs, ...]:
    """The map with every SRTP crypto session naming its stream's group key."""
    spi_of: dict[int, bytes] = {}
    for k, no in _srtp_numbers(plan).items():
        st = plan[k]
        for c in (st.i_cs, st.r_cs):
            if c is not None:
                spi_of[c] = group_spi(generation, no)
    return tuple(dataclasses.replace(cs, spi=spi_of.get(cs.cs_id, cs.spi)) for cs in cs_map)


def _items(gen: Generation, plan: list[streams.StreamCs]) -> list[mikey.KeyData]:
    out: list[mikey.KeyData] = []
    for k, no in _srtp_numbers(plan).items():
        st = plan[k].stream
        assert isinstance(st, streams.SrtpStream)
        tek, salt = gen.key(no, st.suite)
        out.append(
            mikey.KeyData(
                mikey.KEY_TEK_SALT, tek, salt, kv_type=mikey.KV_SPI, kv_data=(group_spi(gen.number, no),)
            )
        )
    return out


def _set_ssrc(cs_map: tuple[mikey.GenericCs, ...], cs_id: int, ssrc: int) -> tuple[mikey.GenericCs, ...]:
    out = []
    for cs in cs_map:
        if cs.cs_id == cs_id:
            roc = (streams.srtp_session(cs) or (0, 0))[1]
            data, sflag = streams._srtp_data(ssrc, roc)
            cs = dataclasses.replace(cs, session_data=data, s_flag=sflag)
        out.append(cs)
    return tuple(out)


def unique_ssrc(taken: set[int]) -> int:
    while True:
        s = streams.random_ssrc()
        if s not in taken:
            return s


def claim_ssrc(ssrc: int | None, taken: set[int]) -> int:
    """``ssrc`` when nobody in the conference uses it, else a new unique one; added to ``taken``."""
    if ssrc is None or ssrc in taken:
        ssrc = unique_ssrc(taken)
    taken.add(ssrc)
    return ssrc


def _srtp_sessions(cs_map: tuple[mikey.GenericCs, ...]) -> dict[int, tuple[int, int]]:
    """{CS ID: (SSRC, ROC)} of the SRTP crypto sessions with session data."""
    return session._sessions({cs.cs_id: cs for cs in cs_map})


def group_keys_by_stream(
    link: Link, items: list[mikey.KeyData]
) -> tuple[dict[int, streams.StreamKeyPair], int | None]:
    """{plan index: keys} for each SRTP stream whose crypto session (ours) names a TEK+SALT of
    the KEMAC: that group key, ``tx`` with our SSRC and no ``rx`` (the same key unprotects every
    member's SSRC); and the generation the SPIs name. The key data are zeroized."""
    by_spi = {kd.spi: kd for kd in items if kd.key_type == mikey.KEY_TEK_SALT and kd.spi}
    cs_by_id = {cs.cs_id: cs for cs in link.cs_map}
    out: dict[int, streams.StreamKeyPair] = {}
    gen: int | None = None
    try:
        for k, st in enumerate(link.plan):
            own = link.own_cs(st)
            cs = cs_by_id.get(own) if own is not None else None
            kd = by_spi.get(cs.spi) if cs is not None else None
            if not isinstance(st.stream, streams.SrtpStream) or cs is None or kd is None:
                continue
            sess = streams.srtp_session(cs)
            klen, slen = SRTP_SUITES[st.stream.suite]
            if sess is None or kd.salt is None or len(kd.key) != klen or len(kd.salt) != slen:
                for p in out.values():
                    p.zeroize()
                raise MikeyError(
                    "mikey.malformed", "group key of the wrong length or without SSRC", cs_id=own
                )
            out[k] = streams.StreamKeyPair(
                SrtpKeys(
                    st.stream.suite,
                    Secret(kd.key.reveal(), "srtp-master-key"),
                    Secret(kd.salt.reveal(), "srtp-master-salt"),
                    sess[0],
                    sess[1],
                )
            )
            gen = generation_of(cs.spi)
    finally:
        for kd in items:
            kd.key.zeroize()
            if kd.salt is not None:
                kd.salt.zeroize()
    return out, gen


def group_stream_keys(
    link: Link, items: list[mikey.KeyData], base: list[streams.StreamKeyPair]
) -> tuple[list[streams.StreamKeyPair], int | None]:
    """``base`` (the keys derived from the TGK, one per stream) with the group keys of the KEMAC
    in place of the SRTP streams' (the replaced ones zeroized); the generation."""
    group, gen = group_keys_by_stream(link, items)
    out = []
    for k, pair in enumerate(base):
        if k in group:
            pair.zeroize()
            out.append(group[k])
        else:
            out.append(pair)
    return out, gen


def _response_keys(
    mpk: Secret, csb_id: int, rand_i: bytes, rand_r: bytes | None, prf: int
) -> protect.MessageKeys:
    return protect.MessageKeys.derive(mpk, csb_id, mikey_prf.DIR_RESPONSE, rand_i, rand_r, prf)


def _rand_r(msg: mikey.Message) -> bytes | None:
    rr = msg.first(mikey.RandRole, mikey.RAND_ROLE_R)
    return rr.rand if rr is not None else None


def _generic(msg: mikey.Message) -> tuple[mikey.GenericCs, ...]:
    return tuple(cs for cs in msg.header.cs_map if isinstance(cs, mikey.GenericCs))


# ---------------------------------------------------------------------------- member side


def link_after_complete(pending: session.PendingOffer, raw: bytes, msg: mikey.Message | None = None) -> Link:
    """The initiator's link once :func:`session.complete` verified ``raw`` (TRANSFER_RESP; ``msg``:
    it decoded, when the caller has it): the response keys (MPKr' with key forking, else MPKi)
    protect the later CSB updates (5.2)."""
    msg = mikey.Message.decode(raw) if msg is None else msg
    h = msg.header
    issued = pending.issued
    rand_r = _rand_r(msg)
    idr = msg.first(mikey.IdRole, mikey.ROLE_R)
    if issued.flags & mikey.F_I:
        rk = msg.first(mikey.RandRole, mikey.RAND_ROLE_KMS)
        if idr is None or rk is None or issued.mpk_r is None:
            raise MikeyError("mikey.malformed", "a forked TRANSFER_RESP needs IDRr and RANDRkms")
        mpk, tgk = session._fork_pair(issued.mpk_r, issued.tgk, idr.data, rk.rand, h.prf_func)
        tgk.zeroize()
        try:
            keys = _response_keys(mpk, h.csb_id, pending.rand_i, rand_r, h.prf_func)
        finally:
            mpk.zeroize()
    else:
        keys = _response_keys(issued.mpk_i, h.csb_id, pending.rand_i, rand_r, h.prf_func)
    id_r = idr.data if idr is not None else pending.peer.encode()
    plan = _plan_with_added(pending.plan, _generic(msg))
    return Link(
        h.csb_id,
        h.prf_func,
        keys,
        pending.own.encode(),
        id_r,
        plan,
        _generic(msg),
        initiator=True,
        last_t=msg.one(mikey.Timestamp).ntp64,
    )


def _plan_with_added(
    plan: list[streams.StreamCs], cs_map: tuple[mikey.GenericCs, ...]
) -> list[streams.StreamCs]:
    """The offer's plan with the policy the responder chose per CS (it may answer #P = 0)."""
    pol = {cs.cs_id: cs.policies[0] for cs in cs_map if cs.policies}
    out = []
    for st in plan:
        c = st.i_cs if st.i_cs is not None else st.r_cs
        out.append(dataclasses.replace(st, policy_no=pol.get(c, st.policy_no)) if c is not None else st)
    return out


def member_after_complete(
    pending: session.PendingOffer, raw: bytes, keys: list[streams.StreamKeyPair]
) -> tuple[list[streams.StreamKeyPair], Link] | None:
    """Dial-in: a verified TRANSFER_RESP carrying the focus's KEMAC (4.2.2.3, 5.2). Returns the
    member's keys (group keys replacing the derived ones of SRTP streams) and the link; None
    when the TRANSFER_RESP carries no KEMAC (an ordinary call)."""
    msg = mikey.Message.decode(raw)
    kemac = msg.first(mikey.Kemac)
    if kemac is None:
        return None
    if not pending.issued.flags & mikey.F_M:  # 6.10: M '0', the Responder SHALL NOT supply keys
        raise MikeyError(
            "mikey.malformed",
            "a KEMAC in TRANSFER_RESP, but the ticket's M flag does not let the responder supply keys",
        )
    link = link_after_complete(pending, raw, msg)
    try:
        items = _open(link.keys, kemac, msg)
        out, gen = group_stream_keys(link, items, keys)
    except MikeyError:
        link.zeroize()
        raise
    link.generation = gen
    return out, link


def _open(keys: protect.MessageKeys, kemac: mikey.Kemac, msg: mikey.Message) -> list[mikey.KeyData]:
    """A KEMAC under a message's keys, its IV from that message's T (docs/kms.md)."""
    return protect.open_kemac(keys, kemac, msg.header.csb_id, msg.one(mikey.Timestamp))


def member_after_answer(
    ti: session.TransferInit,
    resolved: session.ResolvedTicket,
    own: str,
    transfer_resp: bytes | None,
    keys: list[streams.StreamKeyPair],
) -> Link | None:
    """Dial-out: after :func:`session.accept_transfer_init` verified ``ti`` and answered it, the
    focus's KEMAC (encr_key from MPKi, 4.2.2.1) replaces the derived keys of SRTP streams in
    ``keys`` (in place); the link keeps the TRANSFER_RESP's keys for CSB updates (5.2). None when
    the TRANSFER_INIT carries no KEMAC."""
    kemac = ti.message.first(mikey.Kemac)
    if kemac is None:
        return None
    try:
        return _member_after_answer(ti, resolved, own, transfer_resp, keys, kemac)
    except Exception:
        for k in keys:
            k.zeroize()
        raise


def _member_after_answer(
    ti: session.TransferInit,
    resolved: session.ResolvedTicket,
    own: str,
    transfer_resp: bytes | None,
    keys: list[streams.StreamKeyPair],
    kemac: mikey.Kemac,
) -> Link:
    if not resolved.flags & mikey.F_L:  # 6.10: L '0', the Initiator SHALL NOT supply keys
        raise MikeyError(
            "mikey.malformed",
            "a KEMAC in TRANSFER_INIT, but the ticket's L flag does not let the initiator supply keys",
        )
    if transfer_resp is None:
        raise MikeyError("mikey.unsupported", "group keys need a TRANSFER_RESP (F flag) for their updates")
    h = ti.message.header
    ikeys = protect.MessageKeys.derive(
        resolved.mpk_i, h.csb_id, mikey_prf.DIR_INITIAL, ti.rand_i, None, h.prf_func
    )
    try:
        items = _open(ikeys, kemac, ti.message)
    finally:
        ikeys.zeroize()
    resp = mikey.Message.decode(transfer_resp)
    mpk = resolved.mpk_r if resolved.mpk_r is not None else resolved.mpk_i
    lkeys = _response_keys(mpk, h.csb_id, ti.rand_i, _rand_r(resp), h.prf_func)
    idr = resp.first(mikey.IdRole, mikey.ROLE_R)
    link = Link(
        h.csb_id,
        h.prf_func,
        lkeys,
        protect.identity(ti.message, mikey.ROLE_I, resolved.initiator.encode()),
        idr.data if idr is not None else ids.canonical(own).encode(),
        ti.plan,
        _generic(resp),
        initiator=False,
        last_t=resp.one(mikey.Timestamp).ntp64,
    )
    try:
        out, gen = group_stream_keys(link, items, keys)
    except MikeyError:
        link.zeroize()
        raise
    keys[:] = out
    link.generation = gen
    return link


def read_update(
    link: Link, raw: bytes, now: float | None = None, window: float = 300.0
) -> tuple[dict[int, streams.StreamKeyPair], int, dict[int, int]]:
    """A CSB update from the focus (5.2): same CSB ID, a T newer than anything on this link and
    within the window, a MAC under the link's keys over the message and the initial exchange's
    identities, the crypto sessions of the initial exchange (the focus may change their SSRCs
    and SPIs), a KEMAC with the new group keys. Returns the new keys of the streams it re-keys
    by plan index, the generation, and {stream index: SSRC}
    of our streams whose SSRC changed. The link moves on only when all of it checks."""
    now = time.time() if now is None else now
    msg = mikey.Message.decode(raw)
    h = msg.header
    if h.data_type != mikey.DT_TRANSFER_INIT or h.csb_id != link.csb_id or h.prf_func != link.prf_func:
        raise MikeyError("mikey.malformed", "not a CSB update of this session (RFC 6043 5.2)")
    protect.verify(raw, msg, link.keys, link.id_i + link.id_r)
    t = protect.check_fresh(msg, now, window)
    if t.ntp64 <= link.last_t:
        raise MikeyError("mikey.replay", "CSB update not newer than the last message of this session")
    if msg.first(mikey.Ticket) is not None or msg.first(mikey.RandRole) is not None:
        raise MikeyError("mikey.malformed", "a CSB update carries no new TICKET or RAND (RFC 6043 5.2)")
    new_map = _generic(msg)
    old = {cs.cs_id: cs for cs in link.cs_map}
    if sorted(old) != sorted(cs.cs_id for cs in new_map) or any(
        old[cs.cs_id].prot_type != cs.prot_type for cs in new_map
    ):
        raise MikeyError("mikey.malformed", "a CSB update must keep the crypto sessions of the session")
    kemac = msg.first(mikey.Kemac)
    if kemac is None:
        raise MikeyError("mikey.malformed", "a conference re-key carries the new keys in a KEMAC")
    items = _open(link.keys, kemac, msg)
    trial = dataclasses.replace(link, cs_map=new_map)
    before = link.ssrcs()
    out, gen = group_keys_by_stream(trial, items)
    if gen is None:
        raise MikeyError("mikey.malformed", "the CSB update's KEMAC keys none of our crypto sessions")
    after = trial.ssrcs()
    moved: dict[int, int] = {}
    for k, st in enumerate(link.plan):
        c = link.own_cs(st)
        if c is not None and c in after and before.get(c) != after[c]:
            moved[k] = after[c]
    link.cs_map, link.last_t, link.generation = new_map, t.ntp64, gen
    return out, gen, moved


# ---------------------------------------------------------------------------- focus side


def focus_answer(
    ti: session.TransferInit,
    resolved: session.ResolvedTicket,
    own: str,
    replay: session.ReplayCache,
    gen: Generation,
    taken: set[int],
    now: float | None = None,
) -> tuple[bytes, Link, list[streams.StreamKeyPair]]:
    """Dial-in at the focus (4.2.2.3): verify the member's TRANSFER_INIT as a responder does
    (4.2.3.6), then answer with our SSRCs, the member's SSRC replaced when another member (or the
    focus) already sends with it, every SRTP crypto session naming its group key's SPI, and the
    KEMAC of generation ``gen``. ``taken``: the SSRCs in use in the conference (updated).
    Returns TRANSFER_RESP, the link, and the focus's pairwise keys (BFCP PSK)."""
    now = time.time() if now is None else now
    session.verify_transfer_init(ti, resolved, own, replay, now)
    h = ti.message.header
    own_c = ids.canonical(own)
    if not resolved.flags & mikey.F_F:
        raise MikeyError("mikey.unsupported", "a focus answers with its keys in a TRANSFER_RESP (F flag)")
    if not resolved.flags & mikey.F_M:
        raise MikeyError("mikey.unsupported", "the ticket does not let the responder supply keys (M flag)")
    fam = protect.family(h.prf_func)
    ours: list[streams.SrtpStream | None] = []
    for st in ti.plan:
        if isinstance(st.stream, streams.SrtpStream):
            ours.append(streams.SrtpStream(st.stream.suite, claim_ssrc(None, taken)))
        else:
            ours.append(None)
    cs_map, _, plan, added_sps = streams.respond_map(ti.message, resolved.tgk_spi, ours, fam.key_len)
    # the member's own SSRC: kept unless someone in the conference sends with it (4.2.2.3 "MAY update")
    for st in plan:
        if isinstance(st.stream, streams.SrtpStream) and st.i_cs is not None:
            sess = streams.srtp_session(next(c for c in cs_map if c.cs_id == st.i_cs))
            have = sess[0] if sess is not None else None
            ssrc = claim_ssrc(have, taken)
            if ssrc != have:
                cs_map = _set_ssrc(cs_map, st.i_cs, ssrc)
    cs_map = _with_spis(cs_map, plan, gen.number)
    rand_r = os.urandom(session.RAND_LEN) if resolved.flags & mikey.F_G else None
    hdr = mikey.Header(mikey.DT_TRANSFER_RESP, h.csb_id, h.prf_func, False, mikey.MAP_GENERIC_ID, cs_map)
    t = protect.timestamp(now)
    payloads: list[mikey.Payload] = [t]
    if rand_r is not None:
        payloads.append(mikey.RandRole(mikey.RAND_ROLE_R, rand_r))
    id_r = resolved.id_r or own_c.encode()
    payloads.append(mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, id_r))
    if resolved.rand_kms is not None:
        payloads.append(mikey.RandRole(mikey.RAND_ROLE_KMS, resolved.rand_kms))
    payloads += added_sps
    mpk = resolved.mpk_r if resolved.mpk_r is not None else resolved.mpk_i
    rkeys = _response_keys(mpk, h.csb_id, ti.rand_i, rand_r, h.prf_func)
    payloads.append(protect.seal_kemac(rkeys, h.csb_id, t, _items(gen, plan)))
    raw = protect.sign(mikey.Message(hdr, payloads), rkeys, ti.raw)  # 5.5: || TRANSFER_INIT
    link = Link(
        h.csb_id,
        h.prf_func,
        rkeys,
        protect.identity(ti.message, mikey.ROLE_I, resolved.initiator.encode()),
        id_r,
        plan,
        cs_map,
        initiator=False,
        last_t=t.ntp64,
        generation=gen.number,
    )
    sessions = _srtp_sessions(cs_map)
    d = session._derivation(resolved.tgk, resolved.flags, ti.rand_i, rand_r, h.prf_func, h.csb_id)
    tls = [st for st in plan if isinstance(st.stream, streams.TlsStream)]
    pairwise = streams.keys_for(tls, sessions, d, initiator=False)
    replay.remember(ti, now)
    return raw, link, pairwise


def focus_offer(
    issued: session.IssuedTicket,
    own: str,
    member: str,
    media: list[streams.Stream],
    gen: Generation,
    taken: set[int],
    now: float | None = None,
) -> session.PendingOffer:
    """Dial-out at the focus (4.2.2.1): a TRANSFER_INIT whose SRTP crypto sessions name the group
    keys' SPIs and whose KEMAC (encr_key from MPKi) carries generation ``gen``; our SSRCs unique
    in the conference. Initiator Data (Vi, Vr) with key forking, as :func:`session.build_transfer_init`."""
    now = time.time() if now is None else now
    if now >= issued.expiry:
        raise KmsError("kms.ticket_expired", "the ticket has expired; request a new one")
    prf = issued.prf_func
    fam = protect.family(prf)
    mine: list[streams.Stream] = []
    for s in media:
        if isinstance(s, streams.SrtpStream):
            mine.append(streams.SrtpStream(s.suite, claim_ssrc(None, taken), s.roc))
        else:
            mine.append(s)
    cs_map, sps, plan = streams.describe(mine, issued.tgk_spi, fam.key_len)
    cs_map = _with_spis(cs_map, plan, gen.number)
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT,
        session._csb_id(),
        prf,
        issued.ticket.flag(mikey.F_F),
        mikey.MAP_GENERIC_ID,
        cs_map,
    )
    rand_i = os.urandom(session.RAND_LEN)
    own_c, peer_c = ids.canonical(own), ids.canonical(member)
    t_ = issued.ticket
    ticket = mikey.Ticket(
        t_.ticket_type, t_.subtype, t_.version, t_.prf_func, t_.flags, t_.tp_data, t_.reserved, t_.ticket_data
    )
    t = protect.timestamp(now)
    keys = protect.MessageKeys.derive(issued.mpk_i, hdr.csb_id, mikey_prf.DIR_INITIAL, rand_i, None, prf)
    try:
        kemac = protect.seal_kemac(keys, hdr.csb_id, t, _items(gen, plan))
        msg = mikey.Message(
            hdr,
            [
                t,
                mikey.RandRole(mikey.RAND_ROLE_I, rand_i),
                mikey.IdRole(mikey.ROLE_I, mikey.ID_URI, own_c.encode()),
                mikey.IdRole(mikey.ROLE_R, mikey.ID_URI, peer_c.encode()),
                *sps,
                ticket,
                kemac,
            ],
        )
        raw = protect.sign(msg, keys, own_c.encode() + peer_c.encode())
    finally:
        keys.zeroize()
    if ticket.flag(mikey.F_I):
        if issued.mpk_r is None:
            raise KmsError("kms.bad_response", "a forking ticket without MPKr")
        ticket.initiator_data = session.initiator_data(msg.payloads[-1], issued.mpk_r, prf)  # type: ignore[arg-type]
        raw = msg.encode()
    return session.PendingOffer(own_c, peer_c, issued, raw, msg, plan, rand_i)


def focus_after_complete(
    pending: session.PendingOffer, raw: bytes, gen: Generation, taken: set[int]
) -> tuple[Link, dict[int, int]]:
    """Dial-out at the focus, after :func:`session.complete` verified the member's TRANSFER_RESP:
    the link, and {CS ID: SSRC} for the member's crypto sessions whose SSRC another member
    already uses (the focus changes them in a CSB update). ``taken`` is updated."""
    link = link_after_complete(pending, raw)
    link.generation = gen.number
    clashes: dict[int, int] = {}
    theirs = link.ssrcs()
    for st in link.plan:
        c = st.r_cs
        if c is None or not isinstance(st.stream, streams.SrtpStream):
            continue
        have = theirs.get(c)
        ssrc = claim_ssrc(have, taken)
        if ssrc != have:
            clashes[c] = ssrc
    return link, clashes


def build_update(
    link: Link, gen: Generation, now: float | None = None, ssrcs: dict[int, int] | None = None
) -> bytes:
    """A CSB update from the focus (5.2): TRANSFER_INIT with the link's CSB ID, a T newer than
    the link's last, the crypto sessions of the session (SSRCs changed per ``ssrcs``: {CS ID:
    SSRC}), SRTP SPIs naming ``gen``, the KEMAC of ``gen`` under the link's keys, V flag 0 (no
    response expected), V over the message || Identity_i || Identity_r of the initial exchange."""
    now = time.time() if now is None else now
    cs_map = link.cs_map
    for c, s in (ssrcs or {}).items():
        cs_map = _set_ssrc(cs_map, c, s)
    cs_map = _with_spis(cs_map, link.plan, gen.number)
    hdr = mikey.Header(
        mikey.DT_TRANSFER_INIT, link.csb_id, link.prf_func, False, mikey.MAP_GENERIC_ID, cs_map
    )
    t = protect.timestamp(now)
    if t.ntp64 <= link.last_t:
        t = mikey.Timestamp(mikey.TS_NTP_UTC, link.last_t + 1)
    # roles as in the initial exchange; 5.2 lists the sender's identity first
    first, second = (mikey.ROLE_I, mikey.ROLE_R) if link.initiator else (mikey.ROLE_R, mikey.ROLE_I)
    ident = {mikey.ROLE_I: link.id_i, mikey.ROLE_R: link.id_r}
    payloads: list[mikey.Payload] = [
        t,
        mikey.IdRole(first, mikey.ID_URI, ident[first]),
        mikey.IdRole(second, mikey.ID_URI, ident[second]),
        protect.seal_kemac(link.keys, link.csb_id, t, _items(gen, link.plan)),
    ]
    raw = protect.sign(mikey.Message(hdr, payloads), link.keys, link.id_i + link.id_r)
    link.cs_map, link.last_t, link.generation = cs_map, t.ntp64, gen.number
    return raw
