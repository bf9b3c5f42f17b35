"""The lab's conference focus: MRFC (key management towards each member) and MRFP (media relay).

TR 33.829 5.1.3 / 5.3.2: members reach the conference by calling the focus (dial-in) or being
called by it (dial-out); the focus hands every member the conference's group keys over that
member's own Ticket Transfer and re-keys everyone still in the conference when a member joins or
leaves (RFC 6043 4.2.2, 5.2, 9; :mod:`ue_agent.kms.conference`). It keeps every member's SSRC
unique, since all send under one group master key (RFC 3711 9.1).

- :class:`Conference` is sans-IO: bytes and resolved/issued tickets in, bytes out.
- :class:`Focus` adds the focus's own KMS client (the focus is a lab subscriber whose IMPUs are
  the conference URIs: the lab KMS resolves tickets for them and issues tickets in their name).
- :func:`create_focus_app` is the focus's HTTP front in the lab network (the stand-in for the
  SIP signalling the MRFC would do): ``POST /conference/<uri>/dial-in`` (body: TRANSFER_INIT,
  answer: JSON with ``transfer_resp`` and ``updates``), ``/dial-out`` (JSON ``member``, ``media``),
  ``/answered`` (JSON ``member``, ``transfer_resp``), ``/leave`` (JSON ``member``), ``/relay``
  (JSON ``member``, ``packet``: the MRFP forwards an SRTP packet to the other members).
  Binary values are base64, as on the agent's socket.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ue_agent.errors import AgentError
from ue_agent.kms import conference, ids, mikey, session
from ue_agent.kms.streams import SrtpStream, Stream, StreamKeyPair, TlsStream

if TYPE_CHECKING:
    from ue_agent.kms.client import KmsClient
    from ue_agent.subscriber import Subscriber

#: the media of a lab conference: one SRTP audio stream and BFCP floor control with the focus
DEFAULT_MEDIA: tuple[Stream, ...] = (SrtpStream(), TlsStream("TCP/TLS/BFCP"))


@dataclass(repr=False)
class Member:
    uri: str
    link: conference.Link
    #: the focus's side of the pairwise TLS crypto sessions (BFCP floor control)
    pairwise: list[StreamKeyPair] = field(default_factory=list)

    def ssrcs(self) -> set[int]:
        """The SSRCs this member sends with (its own crypto sessions)."""
        mine = {self.link.peer_cs(st) for st in self.link.plan}
        return {s for c, s in self.link.ssrcs().items() if c in mine}

    def zeroize(self) -> None:
        self.link.zeroize()
        for k in self.pairwise:
            k.zeroize()


@dataclass(repr=False)
class Invite:
    pending: session.PendingOffer
    generation: conference.Generation


class Conference:
    """One conference at the focus, sans-IO."""

    def __init__(self, uri: str, clock: Callable[[], float] = time.time) -> None:
        self.uri = ids.canonical(uri)
        self.clock = clock
        self.members: dict[str, Member] = {}
        self.invites: dict[str, Invite] = {}
        self.current: conference.Generation | None = None
        self.replay = session.ReplayCache()
        self._next = 0

    def _generation(self) -> conference.Generation:
        self._next += 1
        return conference.Generation(self._next)

    def taken(self) -> set[int]:
        """SSRCs in use: every member's and the focus's own."""
        out: set[int] = set()
        for m in self.members.values():
            out |= set(m.link.ssrcs().values())
        for inv in self.invites.values():  # the focus's own SSRCs towards invited members
            out |= {
                st.stream.ssrc
                for st in inv.pending.plan
                if isinstance(st.stream, SrtpStream) and st.stream.ssrc is not None
            }
        return out

    def _switch(self, gen: conference.Generation, joiner: str | None) -> dict[str, bytes]:
        """``gen`` becomes the conference's keys: a CSB update to every member but ``joiner``."""
        now = self.clock()
        updates = {
            uri: conference.build_update(m.link, gen, now) for uri, m in self.members.items() if uri != joiner
        }
        if self.current is not None and self.current is not gen:
            self.current.zeroize()
        self.current = gen
        return updates

    # -- dial-in: the member calls the focus

    def dial_in(
        self, ti: session.TransferInit, resolved: session.ResolvedTicket
    ) -> tuple[bytes, dict[str, bytes]]:
        """Answer a member's TRANSFER_INIT with a new generation; the others' updates."""
        gen = self._generation()
        raw, link, pairwise = conference.focus_answer(
            ti, resolved, self.uri, self.replay, gen, self.taken(), self.clock()
        )
        uri = ids.canonical(link.id_i.decode())
        old = self.members.pop(uri, None)
        if old is not None:
            old.zeroize()
        updates = self._switch(gen, None)
        self.members[uri] = Member(uri, link, pairwise)
        return raw, updates

    # -- dial-out: the focus calls the member

    def dial_out(self, issued: session.IssuedTicket, member: str, media: list[Stream]) -> bytes:
        """A TRANSFER_INIT for ``member`` with the generation it will join with (given to the
        others only once the member answers: a member that never answers holds no key in use)."""
        uri = ids.canonical(member)
        gen = self._generation()
        pending = conference.focus_offer(issued, self.uri, uri, media, gen, self.taken(), self.clock())
        old = self.invites.pop(uri, None)
        if old is not None:
            old.generation.zeroize()
        self.invites[uri] = Invite(pending, gen)
        return pending.transfer_init

    def answered(self, member: str, transfer_resp: bytes) -> dict[str, bytes]:
        """The member's TRANSFER_RESP: it joins; updates for the others (and for the member
        itself when its SSRC clashes with another's)."""
        uri = ids.canonical(member)
        inv = self.invites.get(uri)
        if inv is None:
            raise AgentError("media.unknown_session", "no invitation pending for this member")
        _, pairwise = session.complete(inv.pending, transfer_resp, self.clock())
        link, clashes = conference.focus_after_complete(
            inv.pending, transfer_resp, inv.generation, self.taken()
        )
        del self.invites[uri]
        updates = self._switch(inv.generation, uri)
        own = []  # the BFCP keys (TLS-PSK with this member) are kept; the SRTP ones are the group's
        for p, st in zip(pairwise, inv.pending.plan, strict=True):
            if isinstance(st.stream, TlsStream):
                own.append(p)
            else:
                p.zeroize()
        self.members[uri] = Member(uri, link, own)
        if clashes:
            updates[uri] = conference.build_update(link, inv.generation, self.clock(), clashes)
        return updates

    # -- leave

    def leave(self, member: str) -> dict[str, bytes]:
        """``member`` left (BYE): its link is dropped and everyone else gets a new generation."""
        m = self.members.pop(ids.canonical(member), None)
        if m is None:
            raise AgentError("media.unknown_session", "not a member of this conference")
        m.zeroize()
        return self._switch(self._generation(), None) if self.members else {}

    # -- MRFP

    def relay(self, member: str, packet: bytes) -> dict[str, bytes]:
        """Forward an SRTP packet to every other member, unchanged (the MRFP does not hold the
        group key's use: it forwards); a packet whose SSRC is not the sender's is dropped."""
        m = self.members.get(ids.canonical(member))
        if m is None or len(packet) < 12 or int.from_bytes(packet[8:12], "big") not in m.ssrcs():
            return {}
        return {uri: packet for uri in self.members if uri != m.uri}

    def close(self) -> None:
        for m in self.members.values():
            m.zeroize()
        self.members.clear()
        for inv in self.invites.values():
            inv.generation.zeroize()
        self.invites.clear()
        if self.current is not None:
            self.current.zeroize()


class Focus:
    """The MRFC with its KMS clients (one per conference URI, all under the focus subscriber)."""

    def __init__(self, kms_for: Callable[[str], KmsClient], clock: Callable[[], float] = time.time) -> None:
        self._kms_for = kms_for
        self.clock = clock
        self.conferences: dict[str, Conference] = {}
        self._clients: dict[str, KmsClient] = {}
        self._http: Any = None

    def conference(self, uri: str) -> Conference:
        uri = ids.canonical(uri)
        if uri not in self.conferences:
            self.conferences[uri] = Conference(uri, self.clock)
        return self.conferences[uri]

    def _kms(self, uri: str) -> KmsClient:
        uri = ids.canonical(uri)
        if uri not in self._clients:
            self._clients[uri] = self._kms_for(uri)
        return self._clients[uri]

    async def dial_in(self, uri: str, transfer_init: bytes) -> tuple[bytes, dict[str, bytes]]:
        conf = self.conference(uri)
        ti = session.inspect_transfer_init(transfer_init)
        resolved = await self._kms(uri)._resolve(ti)
        try:
            return conf.dial_in(ti, resolved)
        finally:
            resolved.zeroize()

    async def dial_out(self, uri: str, member: str, media: list[Stream] | None = None) -> bytes:
        conf = self.conference(uri)
        kms = self._kms(uri)
        # a new ticket per invitation: none reused across membership changes (RFC 6043 5.3, 12.5)
        # L flag: the focus, the initiator, supplies the session keys (RFC 6043 6.10)
        flags = session.FLAGS_FORKED | mikey.F_L
        issued = await kms._request_ticket([ids.canonical(member)], False, kms.ticket_validity, flags)
        return conf.dial_out(issued, member, list(media or DEFAULT_MEDIA))

    def close(self) -> None:
        for c in self.conferences.values():
            c.close()
        for k in self._clients.values():
            k.forget()

    async def aclose(self) -> None:
        self.close()
        if self._http is not None:
            await self._http.__aexit__(None, None, None)
            self._http = None


async def start_focus(network: Any, sub: Subscriber) -> tuple[Focus, Any]:
    """The focus of a :class:`~ue_agent.lab.network.LabNetwork` (started: its BSF and KMS
    listen): GBA with the lab BSF as ``sub``, then the lab KMS as a NAF, over loopback HTTP."""
    from ue_agent.drivers.http import HttpClient
    from ue_agent.gba.client import GbaClient
    from ue_agent.gba.naf_client import NafClient
    from ue_agent.kms.client import KmsClient
    from ue_agent.lab.card_ops import SoftCardOps

    http = HttpClient()
    await http.__aenter__()
    gba = GbaClient(SoftCardOps(sub), network.bsf_url, network.bsf_fqdn, sub.impi, http, clock=network.clock)
    naf = NafClient(gba, http)

    def kms_for(uri: str) -> KmsClient:
        return KmsClient(naf, network.kms_url, network.kms_fqdn, uri, clock=network.clock)

    focus = Focus(kms_for, network.clock)
    focus._http = http
    return focus, create_focus_app(focus)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _media(names: list[str] | None) -> list[Stream]:
    if not names:
        return list(DEFAULT_MEDIA)
    return [TlsStream("TCP/TLS/BFCP") if n == "bfcp" else SrtpStream() for n in names]


def create_focus_app(focus: Focus) -> Any:
    """The focus's HTTP front on loopback (see the module docstring)."""
    from aiohttp import web

    def updates(u: dict[str, bytes]) -> dict[str, str]:
        return {k: _b64(v) for k, v in u.items()}

    async def handle(request: web.Request) -> web.Response:
        uri, action = request.match_info["uri"], request.match_info["action"]
        try:
            if action == "dial-in":
                resp, ups = await focus.dial_in(uri, await request.read())
                return web.json_response({"transfer_resp": _b64(resp), "updates": updates(ups)})
            body = await request.json()
            conf = focus.conference(uri)
            if action == "dial-out":
                ti = await focus.dial_out(uri, body["member"], _media(body.get("media")))
                return web.json_response({"transfer_init": _b64(ti)})
            if action == "answered":
                ups = conf.answered(body["member"], base64.b64decode(body["transfer_resp"]))
                return web.json_response({"updates": updates(ups)})
            if action == "leave":
                return web.json_response({"updates": updates(conf.leave(body["member"]))})
            if action == "relay":
                out = conf.relay(body["member"], base64.b64decode(body["packet"]))
                return web.json_response({"packets": updates(out)})
        except AgentError as e:
            return web.json_response({"error": {"code": e.code, "message": e.message}}, status=400)
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_post("/conference/{uri}/{action}", handle)
    return app
