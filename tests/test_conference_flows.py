"""Conferences through the lab focus without HTTP (sans-IO): dial-in and dial-out members get the
focus's group keys (RFC 6043 4.2.2.1, 4.2.2.3), re-key on join and leave by CSB update (5.2), the
focus keeps SSRCs unique, BFCP keeps a pairwise TLS PSK; real SRTP (pylibsrtp) between members."""

from __future__ import annotations

import os

import pylibsrtp
import pytest

from tests.fixtures.clock import Clock
from ue_agent.errors import MikeyError
from ue_agent.kms import conference, mikey, service, session
from ue_agent.kms.streams import SrtpStream, TlsStream
from ue_agent.lab.focus import Conference
from ue_agent.media.keys import SrtpKeys, TlsPskKeys
from ue_agent.secret import Secret

DOMAIN = "ims.example.org"
KMS_ID = "kms.ims.example.org"
CONF = f"sip:conf-1@{DOMAIN}"
USERS = {n: f"sip:{n}@{DOMAIN}" for n in ("alice", "bob", "carol", "dave")}
IMPUS = {**{n: [u] for n, u in USERS.items()}, "focus": [f"sip:mrfc@{DOMAIN}", CONF]}
MEDIA = [SrtpStream(), TlsStream("TCP/TLS/BFCP")]


class Lab:
    def __init__(self) -> None:
        self.clock = Clock()
        self.psk = {n: Secret(os.urandom(32), "Ks_NAF") for n in IMPUS}
        self.kms = service.KmsService(KMS_ID, self.psk_of, self.identities_of, clock=self.clock)

    def psk_of(self, idr: bytes | None) -> Secret | None:
        return self.psk.get(idr.decode()[5:]) if idr else None

    def identities_of(self, idr: bytes | None) -> list[str]:
        return IMPUS[idr.decode()[5:]] if idr else []

    def handle(self, raw: bytes) -> tuple[int, bytes]:
        body = self.kms.handle(raw)
        return service.reply_status(body), body

    def request(self, who: str, own: str, recipients: list[str], **kw) -> session.IssuedTicket:
        sent = session.build_request_init(
            own, recipients, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock(), **kw
        )
        return session.read_request_resp(*self.handle(sent.raw), sent, self.psk[who], KMS_ID)

    def resolve(self, who: str, own: str, ti: session.TransferInit) -> session.ResolvedTicket:
        sent = session.build_resolve_init(own, ti, f"btid-{who}", self.psk[who], KMS_ID, now=self.clock())
        return session.read_resolve_resp(*self.handle(sent.raw), sent, self.psk[who], KMS_ID)


class Agent:
    """A member's side as ue_agent.ops drives it: keys per stream, the link for updates."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab, self.name, self.uri = lab, name, USERS[name]
        self.keys: list = []
        self.link: conference.Link | None = None
        self.replay = session.ReplayCache()

    def dial_in(self, conf: Conference, media=MEDIA) -> dict[str, bytes]:
        issued = self.lab.request(self.name, self.uri, [CONF], flags=session.FLAGS_FORKED | mikey.F_M)
        pending = session.build_transfer_init(issued, self.uri, CONF, media, KMS_ID, self.lab.clock())
        ti = session.inspect_transfer_init(pending.transfer_init)
        self.lab.clock.now += 0.25  # the focus answers a moment later (a fresh T, 4.2.2.3)
        resp, updates = conf.dial_in(ti, self.lab.resolve("focus", CONF, ti))
        _, keys = session.complete(pending, resp, self.lab.clock())
        self.pending, self.transfer_resp = pending, resp
        got = conference.member_after_complete(pending, resp, keys)
        assert got is not None
        self.keys, self.link = got
        return updates

    def answer(self, transfer_init: bytes) -> bytes:
        ti = session.inspect_transfer_init(transfer_init)
        resolved = self.lab.resolve(self.name, self.uri, ti)
        resp, keys = session.accept_transfer_init(ti, resolved, self.uri, self.replay, self.lab.clock())
        self.link = conference.member_after_answer(ti, resolved, self.uri, resp, keys)
        self.keys = keys
        assert resp is not None
        return resp

    def update(self, raw: bytes) -> int:
        assert self.link is not None
        new, gen, _ = conference.read_update(self.link, raw, self.lab.clock())
        for i, k in new.items():
            self.keys[i].zeroize()
            self.keys[i] = k
        return gen

    @property
    def srtp(self) -> SrtpKeys:
        k = self.keys[0].tx
        assert isinstance(k, SrtpKeys) and self.keys[0].rx is None
        return k

    def protect(self, seq: int, payload: bytes) -> bytes:
        k = self.srtp
        pol = pylibsrtp.Policy(
            key=k.master_key.reveal() + k.master_salt.reveal(), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND
        )
        rtp = (
            bytes([0x80, 0x00])
            + seq.to_bytes(2, "big")
            + (1000 + seq).to_bytes(4, "big")
            + k.ssrc.to_bytes(4, "big")
            + payload
        )
        return pylibsrtp.Session(policy=pol).protect(rtp)

    def unprotect(self, packet: bytes) -> bytes:
        k = self.srtp
        pol = pylibsrtp.Policy(
            key=k.master_key.reveal() + k.master_salt.reveal(), ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND
        )
        return pylibsrtp.Session(policy=pol).unprotect(packet)[12:]


def apply(agents: dict[str, Agent], updates: dict[str, bytes]) -> set[int]:
    by_uri = {a.uri: a for a in agents.values()}
    return {by_uri[u].update(raw) for u, raw in updates.items()}


def all_hear_all(conf: Conference, agents: list[Agent], seq: int = 1) -> None:
    for a in agents:
        pkt = a.protect(seq, b"from " + a.name.encode())
        out = conf.relay(a.uri, pkt)
        assert set(out) == {b.uri for b in agents if b is not a}
        for b in agents:
            if b is not a:
                assert b.unprotect(out[b.uri]) == b"from " + a.name.encode()


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_three_members_dial_in_rekey_on_join_and_leave(lab) -> None:
    conf = Conference(CONF, lab.clock)
    a, b, c = (Agent(lab, n) for n in ("alice", "bob", "carol"))
    agents = {"alice": a, "bob": b, "carol": c}
    assert apply(agents, a.dial_in(conf)) == set()
    assert a.link.generation == 1
    assert apply(agents, b.dial_in(conf)) == {2}
    assert apply(agents, c.dial_in(conf)) == {3}
    assert a.link.generation == b.link.generation == c.link.generation == 3
    all_hear_all(conf, [a, b, c])
    ssrcs = [m.srtp.ssrc for m in (a, b, c)]
    assert len(set(ssrcs)) == 3
    assert len(set(conf.taken())) == 6  # three members and the focus's own three
    # BFCP: a pairwise TLS PSK per member, the focus holds the same one
    for m in (a, b, c):
        psk = m.keys[1].tx
        assert isinstance(psk, TlsPskKeys)
        theirs = conf.members[m.uri].pairwise[0].tx
        assert isinstance(theirs, TlsPskKeys)
        assert (theirs.identity, theirs.key.reveal()) == (psk.identity, psk.key.reveal())
    assert a.keys[1].tx.key.reveal() != b.keys[1].tx.key.reveal()
    old_c = SrtpKeys(
        "AES_CM_128_HMAC_SHA1_80",
        Secret(c.srtp.master_key.reveal()),
        Secret(c.srtp.master_salt.reveal()),
        c.srtp.ssrc,
    )
    lab.clock.now += 1
    updates = conf.leave(c.uri)
    assert set(updates) == {a.uri, b.uri}
    assert apply(agents, updates) == {4}
    all_hear_all(conf, [a, b], seq=2)
    # C kept its generation-3 key: it cannot read generation 4
    pkt = a.protect(3, b"secret")
    c.keys[0].tx = old_c
    with pytest.raises(pylibsrtp.Error):
        c.unprotect(pkt)
    assert conf.relay(c.uri, c.protect(4, b"x")) == {}  # the MRFP no longer forwards C


def test_dial_out_and_ssrc_clash(lab) -> None:
    conf = Conference(CONF, lab.clock)
    a, b = Agent(lab, "alice"), Agent(lab, "bob")
    agents = {"alice": a, "bob": b}
    a.dial_in(conf)
    issued = lab.request("focus", CONF, [b.uri], flags=session.FLAGS_FORKED | mikey.F_L)
    ti = conf.dial_out(issued, b.uri, MEDIA)
    assert a.link.generation == 1  # nobody has the invitation's generation yet
    # B answers with A's SSRC: the focus moves B's SSRC in an update of its own
    a_ssrc = a.srtp.ssrc
    tinit = session.inspect_transfer_init(ti)
    resolved = lab.resolve("bob", b.uri, tinit)
    resp, keys = session.accept_transfer_init(
        tinit, resolved, b.uri, b.replay, lab.clock(), own_streams=[SrtpStream(ssrc=a_ssrc), None]
    )
    b.link = conference.member_after_answer(tinit, resolved, b.uri, resp, keys)
    b.keys = keys
    assert b.srtp.ssrc == a_ssrc and b.link.generation == 2
    updates = conf.answered(b.uri, resp)
    assert set(updates) == {a.uri, b.uri}
    raw_b = updates[b.uri]
    assert apply(agents, updates) == {2}
    assert b.srtp.ssrc != a_ssrc
    all_hear_all(conf, [a, b])
    # an update replayed, or altered, is refused and changes nothing
    with pytest.raises(MikeyError) as e:
        b.update(raw_b)
    assert e.value.code == "mikey.replay"
    lab.clock.now += 1
    up = conf.leave(a.uri)
    bad = bytearray(up[b.uri])
    bad[-1] ^= 1
    with pytest.raises(MikeyError) as e:
        b.update(bytes(bad))
    assert e.value.code == "mikey.bad_mac" and b.link.generation == 2
    assert b.update(up[b.uri]) == 3


def test_update_keys_differ_per_member_link(lab) -> None:
    """Each member's update is sealed under its own link: another member's update does not verify."""
    conf = Conference(CONF, lab.clock)
    a, b, c = (Agent(lab, n) for n in ("alice", "bob", "carol"))
    a.dial_in(conf)
    b.dial_in(conf)
    updates = c.dial_in(conf)
    with pytest.raises(MikeyError):
        a.update(updates[b.uri])


def test_secrets_not_in_reprs(lab) -> None:
    conf = Conference(CONF, lab.clock)
    a = Agent(lab, "alice")
    a.dial_in(conf)
    text = repr(a.link) + repr(conf.current) + repr(a.keys)
    assert a.srtp.master_key.reveal().hex() not in text


def _srtp(ssrc: int, key: bytes | None = None, salt: bytes | None = None) -> SrtpKeys:
    return SrtpKeys(
        "AES_CM_128_HMAC_SHA1_80", Secret(key or os.urandom(16)), Secret(salt or os.urandom(14)), ssrc
    )


def test_keystore_rekey_retires_old_keys_and_guards_new_ones() -> None:
    from ue_agent.errors import MediaError
    from ue_agent.media.keys import StreamKeys
    from ue_agent.media.store import KeyStore

    store = KeyStore()
    old = _srtp(7)
    old_key, old_salt = old.master_key.reveal(), old.master_salt.reveal()
    sid = store.add(
        [StreamKeys("audio", old), StreamKeys("bfcp", TlsPskKeys("id", Secret(os.urandom(32))))], kind="mikey"
    )
    store.report(sid, 7, 500)
    store.rekey(sid, {0: StreamKeys("audio", _srtp(9))})
    got = store.keys(sid)
    assert got["streams"][0]["tx"]["ssrc"] == 9 and got["streams"][1]["tx"]["kind"] == "tls-psk"
    assert [s["ssrc"] for s in got["ssrcs"]] == [9]
    assert old.master_key.reveal() != old_key  # zeroized
    # a retired key never comes back, and a refused re-key changes nothing
    again = _srtp(9, old_key, old_salt)
    with pytest.raises(MediaError) as e:
        store.rekey(sid, {0: StreamKeys("audio", again)})
    assert e.value.code == "media.key_reuse" and store.keys(sid)["streams"][0]["tx"]["ssrc"] == 9
    with pytest.raises(MediaError):
        store.rekey(sid, {5: StreamKeys("audio", _srtp(1))})


def test_focus_messages_read_by_the_independent_rfc6043_code(lab) -> None:
    """The focus's TRANSFER_RESP with its KEMAC and its CSB update, checked with the independent
    implementation (tests/independent/rfc6043/, written from the RFC text only): strict decoding,
    the keys of 5.1.1/5.1.2, the V MAC (5.5), the KEMAC decrypted to the group key the agent uses."""
    from tests.independent.rfc6043 import algs, keys, messages, prf

    conf = Conference(CONF, lab.clock)
    a, b = Agent(lab, "alice"), Agent(lab, "bob")
    a.dial_in(conf)
    issued = lab.request("bob", b.uri, [CONF], flags=session.FLAGS_FORKED | mikey.F_M)
    pending = session.build_transfer_init(issued, b.uri, CONF, MEDIA, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(pending.transfer_init)
    lab.clock.now += 0.5  # the response's T is fresh (4.2.2.3)
    resp, updates = conf.dial_in(ti, lab.resolve("focus", CONF, ti))
    _, derived = session.complete(pending, resp, lab.clock())
    got = conference.member_after_complete(pending, resp, derived)
    assert got is not None
    b.keys, b.link = got

    d = messages.decode(resp, initial=pending.transfer_init)
    h = d.msg.header
    idr, rkms = d.get("IDRr"), d.get("RANDRkms")
    mpk_r = prf.fork_key(h.prf_func, issued.mpk_r.reveal(), prf.C_MPKR_FORK, idr.data, rkms.rand)
    v = d.msg.payloads[-1]
    kemac = d.get("KEMAC")
    pk = keys.protection_keys(
        h.prf_func,
        mpk_r,
        h.csb_id,
        2,
        pending.rand_i,
        d.get("RANDRr").rand,
        mac_alg=v.mac_alg,
        encr_alg=kemac.encr_alg,
    )
    assert (
        algs.compute_mac(v.mac_alg, pk.auth, messages.mac_input(d, initial_raw=pending.transfer_init))
        == v.mac
    )
    items, _ = keys.decrypt_kemac(kemac, pk, h.csb_id, [("T of TRANSFER_RESP", d.get("T"))])
    assert [(kd.key, kd.salt) for kd in items] == [(b.srtp.master_key.reveal(), b.srtp.master_salt.reveal())]

    # alice's update (5.2): her CSB ID, no TICKET or RAND, protected with the keys of her
    # TRANSFER_RESP (MPKr', RANDRi, RANDRr), MAC over it || Identity_i || Identity_r, the new group key
    raw = updates[a.uri]
    u = messages.decode(raw, initial=a.pending.transfer_init)
    first = messages.decode(a.transfer_resp, initial=a.pending.transfer_init)
    fh = first.msg.header
    assert u.msg.header.csb_id == fh.csb_id and u.get("TICKET") is None and u.get("RANDRi") is None
    mpk_a = prf.fork_key(
        fh.prf_func,
        a.pending.issued.mpk_r.reveal(),
        prf.C_MPKR_FORK,
        first.get("IDRr").data,
        first.get("RANDRkms").rand,
    )
    v, kemac = u.msg.payloads[-1], u.get("KEMAC")
    pk = keys.protection_keys(
        fh.prf_func,
        mpk_a,
        fh.csb_id,
        2,
        a.pending.rand_i,
        first.get("RANDRr").rand,
        mac_alg=v.mac_alg,
        encr_alg=kemac.encr_alg,
    )
    ids_ = (a.uri.encode(), first.get("IDRr").data)
    assert algs.compute_mac(v.mac_alg, pk.auth, messages.mac_input(u, identities=ids_)) == v.mac
    items, _ = keys.decrypt_kemac(kemac, pk, fh.csb_id, [("T of the update", u.get("T"))])
    a.update(raw)
    assert a.srtp.master_key.reveal() == b.srtp.master_key.reveal() == items[0].key


def test_keys_from_a_focus_only_where_the_ticket_lets_it_supply_them(lab) -> None:
    """RFC 6043 6.10: M '0' -- the responder SHALL NOT supply keys; L '0' -- the initiator SHALL NOT."""
    conf = Conference(CONF, lab.clock)
    a = Agent(lab, "alice")
    issued = lab.request("alice", a.uri, [CONF])  # an ordinary ticket: M clear
    pending = session.build_transfer_init(issued, a.uri, CONF, MEDIA, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(pending.transfer_init)
    with pytest.raises(MikeyError) as e:
        conf.dial_in(ti, lab.resolve("focus", CONF, ti))
    assert e.value.code == "mikey.unsupported"
    # a focus answering with keys anyway (M set in its copy of the policy only) is refused by the member
    got = Agent(lab, "bob")
    issued = lab.request("bob", got.uri, [CONF], flags=session.FLAGS_FORKED | mikey.F_M)
    pending = session.build_transfer_init(issued, got.uri, CONF, MEDIA, KMS_ID, lab.clock())
    ti = session.inspect_transfer_init(pending.transfer_init)
    resp, _ = conf.dial_in(ti, lab.resolve("focus", CONF, ti))
    pending.issued.ticket.flags &= ~mikey.F_M
    _, keys = session.complete(pending, resp, lab.clock())
    with pytest.raises(MikeyError):
        conference.member_after_complete(pending, resp, keys)
    # dial-out on a ticket without L: the member refuses the focus's KEMAC
    plain = lab.request("focus", CONF, [USERS["carol"]])
    raw = conf.dial_out(plain, USERS["carol"], MEDIA)
    c = Agent(lab, "carol")
    with pytest.raises(MikeyError) as e:
        c.answer(raw)
    assert "L flag" in e.value.message


def test_a_kms_that_knows_its_focuses_lets_only_them_supply_keys(lab) -> None:
    """RFC 6043 6.10 as the KMS's policy: L (the initiator may supply keys) only for a focus initiator, M (the
    responder may) only when every responder is a focus; the KMS marks the change (K flag)."""
    lab.kms = service.KmsService(
        KMS_ID, lab.psk_of, lab.identities_of, clock=lab.clock, focus_identities=IMPUS["focus"]
    )
    wanted = session.FLAGS_FORKED | mikey.F_L | mikey.F_M
    to_focus = lab.request("bob", USERS["bob"], [CONF], flags=wanted).ticket.flags
    assert to_focus & mikey.F_M and not to_focus & mikey.F_L and to_focus & mikey.F_K
    from_focus = lab.request("focus", CONF, [USERS["bob"]], flags=wanted).ticket.flags
    assert from_focus & mikey.F_L and not from_focus & mikey.F_M
    between_members = lab.request("bob", USERS["bob"], [USERS["carol"]], flags=wanted).ticket.flags
    assert not between_members & (mikey.F_L | mikey.F_M)
    # a member asking M for a pattern that happens to cover the focus is still refused M
    pattern = lab.request("bob", USERS["bob"], [f"*@{DOMAIN}"], flags=wanted).ticket.flags
    assert not pattern & mikey.F_M
