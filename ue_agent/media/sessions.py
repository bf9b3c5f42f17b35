"""The one media-session registry (sans-IO): every session's id, owner, kind, phase and keys' handles.

A session is created by an operation (``sdes.offer``, ``sdes.answer``, ``mikey.*``) and
lives here until ``session.close``; the key store (:mod:`ue_agent.media.store`) holds its
keys under the same id and the handover tracker (:mod:`ue_agent.handover.state`) moves it
through SRVCC with :meth:`SessionRegistry.srvcc`, the only place the SRVCC transitions are
written. Phases::

    offered --answer--> active --srvcc started--> handover --cancelled/failure--> active
    (peer's offer) answered                        handover --success--> closed (handed over)
    any --session.close / keys withdrawn--> closed

``offered``: our offer waits for the peer's answer; the session holds the offer (its keys'
handles), the store holds nothing yet. ``answered``: we answered the peer's offer; the keys
are in the store and usable, as for ``active``. The session-id rule (:data:`SESSION_ID`) is
written here once; the store and the operations use it.

Session ids are per uid: the id a client chooses (or gets) names a session in its own uid's
namespace only. Internally a session is keyed ``"<owner uid>/<id>"`` (:func:`scoped`; ``/``
is not allowed in an id, so the key is unambiguous): the registry and the key store use that
key, so another uid choosing the same id string gets its own session, and no lookup,
creation or error can tell it that the other one exists. Events carry the key; the daemon
turns it back into the id for the owner (and names it ``"<uid>/<id>"`` for root).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from ue_agent.errors import MediaError

if TYPE_CHECKING:
    from ue_agent.kms.session import PendingOffer
    from ue_agent.media.protection import Protection
    from ue_agent.media.sdes import LocalOffer

#: a session id: what the softphone may choose (RFC 3261 token characters, roughly), or ours
SESSION_ID = re.compile(r"[A-Za-z0-9._:@+-]{1,128}")
#: what the key store accepts: an id, or an id scoped by its owner's uid (:func:`scoped`)
STORE_ID = re.compile(r"(?:[0-9]{1,10}/)?[A-Za-z0-9._:@+-]{1,128}")
BAD_SESSION = "media.bad_session"
UNKNOWN_SESSION = "media.unknown_session"
SESSION_EXISTS = "media.session_exists"
TOO_MANY_SESSIONS = "media.too_many_sessions"
#: the handset defaults of [limits] (ue_agent.config.LimitsConfig)
MAX_SESSIONS = 64
MAX_PENDING_OFFERS = 32
#: seconds an offer waits for its answer before it is dropped (its keys zeroized)
OFFER_TTL_S = 300.0
#: closed sessions (keys withdrawn, refused, handed over) kept so session.keys can say why;
#: beyond this many the oldest are forgotten (they hold no keys)
MAX_CLOSED = 256
#: the media SRVCC moves to CS: voice, and video with vSRVCC (TS 23.216)
VOICE_MEDIA = frozenset({"audio", "video"})


def check_session_id(sid: object) -> str:
    """``sid`` if it follows the rule, else ``media.bad_session``."""
    if not isinstance(sid, str) or not SESSION_ID.fullmatch(sid):
        raise MediaError(BAD_SESSION, "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")
    return sid


def scoped(owner: int, sid: str) -> str:
    """The internal key of ``owner``'s session ``sid`` (registry, key store, events)."""
    return f"{owner}/{sid}"


def unscoped(key: str) -> tuple[int | None, str]:
    """(owner, id) of a key made by :func:`scoped`; (None, key) for an unscoped id."""
    head, sep, tail = key.partition("/")
    if sep and head.isdigit():
        return int(head), tail
    return None, key


def new_session_id() -> str:
    import secrets

    return "s-" + secrets.token_hex(8)


class Phase(StrEnum):
    OFFERED = "offered"
    ANSWERED = "answered"
    ACTIVE = "active"
    HANDOVER = "handover"
    CLOSED = "closed"


class Srvcc(StrEnum):
    """An SRVCC report: TS 27.007 +CIREPH <srvcch> 0 started, 1 successful, 2 cancelled,
    3 general failure."""

    STARTED = "started"
    SUCCESS = "success"
    CANCELLED = "cancelled"
    FAILURE = "failure"


class HandoverState(StrEnum):
    """A session's SRVCC / IP-mobility state as the API shows it (``session.keys`` ``handover``,
    the ``handover`` event), derived from its phase."""

    ACTIVE = "active"
    HANDOVER_PENDING = "handover_pending"
    HANDED_OVER = "handed_over"  # keys released: on CS now
    REKEY_REQUIRED = "rekey_required"


@dataclass
class EarlyDialog:
    """One early dialog's keys (ue_agent.ops.early): in the key store under ``store_id``."""

    store_id: str | None  # None: the provisional answer carried no key (plain early media)
    digest: bytes  # of the answer that keyed it, to recognise the final answer repeating it
    protection: Protection


@dataclass
class MediaSession:
    id: str
    owner: int
    kind: str  # "sdes" or "mikey"
    phase: Phase
    #: offered: the offer waiting for its answer (SDES LocalOffer with its keys, or the
    #: MIKEY PendingOffer); its keys' handles until the answer comes or the offer is closed
    offer: LocalOffer | PendingOffer | None = None
    #: offered: the media names the offer was made for
    media: list[str] = field(default_factory=list)
    #: an address or link went away: keys stay, the softphone should re-key
    rekey_required: bool = False
    #: closed: why ("closed", "handed_over", or the key store's reason: "compromised",
    #: "exhausted")
    ended: str | None = None
    #: the phase an SRVCC that is cancelled or fails returns to
    resume: Phase | None = None
    #: how the session is protected (set when it gets keys; media.protection)
    protection: Protection | None = None
    #: media whose streams SRVCC moved to CS (their keys released; the session lives on)
    moved: list[str] = field(default_factory=list)
    #: offered: the early dialogs keyed by provisional answers (ue_agent.ops.early)
    early: dict[str, EarlyDialog] = field(default_factory=dict)
    #: offered (MIKEY): the party called and the ticket's recipients
    requested: str | None = None
    recipients: list[str] | None = None
    #: offered: the connection that made the offer (it dies with it) and when (registry clock)
    conn: int | None = None
    since: float = 0.0

    @property
    def key(self) -> str:
        """The session's key in the registry and the key store (per-uid namespace)."""
        return scoped(self.owner, self.id)

    @property
    def live(self) -> bool:
        """Keys in the store and usable (active, answered, or in an SRVCC not finished)."""
        return self.phase in (Phase.ACTIVE, Phase.ANSWERED, Phase.HANDOVER)

    @property
    def handover(self) -> HandoverState | None:
        if self.phase is Phase.HANDOVER:
            return HandoverState.HANDOVER_PENDING
        if self.phase is Phase.CLOSED:
            return HandoverState.HANDED_OVER if self.ended == "handed_over" else None
        if self.phase is Phase.OFFERED:
            return None
        return HandoverState.REKEY_REQUIRED if self.rekey_required else HandoverState.ACTIVE

    @property
    def key_state(self) -> str:
        """The keys' state on the wire (``session.keys`` ``state``, ``status`` ``by_state``)."""
        if self.phase is Phase.HANDOVER:
            return "handover_pending"
        if self.phase is Phase.CLOSED:
            return "released" if self.ended == "handed_over" else str(self.ended)
        return "active"


@dataclass(frozen=True)
class Decision:
    """What changed for one session after an input, and whether its keys must go."""

    session: str
    owner: int
    old: HandoverState
    new: HandoverState
    release_keys: bool = False
    #: SRVCC success on a session that also carries non-voice media: only these media's keys
    #: go (their streams moved to CS); the others stay on their PS bearer
    release_media: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return scoped(self.owner, self.session)


_LIVE, _PENDING = ("live", ""), ("pending", "")


def _tally_keys(s: MediaSession) -> list[tuple[str, str]]:
    """What ``s`` adds to the registry's counters: live / pending, its key state, its handover state."""
    out: list[tuple[str, str]] = []
    if s.live:
        out += [_LIVE, ("state", s.key_state)]
    elif s.phase is Phase.OFFERED:
        out.append(_PENDING)
    h = s.handover
    if h is not None:
        out.append(("handover", h.value))
    return out


class SessionRegistry:
    """Every media session of the agent, by id. Not thread-safe: use from one loop.

    The counts ``status`` shows are kept as sessions change phase (every change goes through
    this class), per owner and in all: reading them costs the same at 10 and 10,000 sessions.
    """

    def __init__(
        self,
        max_pending: int = MAX_PENDING_OFFERS,
        max_sessions: int = MAX_SESSIONS,
        *,
        offer_ttl: float = OFFER_TTL_S,
        max_closed: int = MAX_CLOSED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_pending = max_pending
        #: an offer older than this many seconds is dropped by :meth:`reap`
        self.offer_ttl = offer_ttl
        self.max_closed = max_closed
        self.clock = clock
        #: keys of the waiting offers and of the closed sessions, oldest first
        self._offers: dict[str, None] = {}
        self._closed: dict[str, None] = {}
        #: called with each offer :meth:`reap` or :meth:`connection_closed` drops (its keys
        #: must be zeroized: the agent does that)
        self.on_drop: Callable[[MediaSession], None] | None = None
        #: live sessions plus offers waiting for their answer, at most
        self.max_sessions = max_sessions
        self._sessions: dict[str, MediaSession] = {}
        #: owner (None: everyone) -> counter key -> count
        self._counts: dict[int | None, dict[tuple[str, str], int]] = {None: {}}
        #: called with each session that gets keys (the handover tracker listens)
        self.on_new: Callable[[MediaSession], None] | None = None

    def _tally(self, s: MediaSession, sign: int) -> None:
        skey = s.key
        if sign < 0:
            self._offers.pop(skey, None)
            self._closed.pop(skey, None)
        elif s.phase is Phase.OFFERED:
            self._offers[skey] = None
        elif s.phase is Phase.CLOSED:
            self._closed[skey] = None
        for owner in (None, s.owner):
            counts = self._counts.setdefault(owner, {})
            for key in _tally_keys(s):
                n = counts.get(key, 0) + sign
                if n:
                    counts[key] = n
                else:
                    del counts[key]
            if owner is not None and not counts:
                del self._counts[owner]

    def _count(self, owner: int | None, key: tuple[str, str]) -> int:
        return self._counts.get(owner, {}).get(key, 0)

    def _counted(self, owner: int | None, kind: str) -> dict[str, int]:
        return {k[1]: n for k, n in self._counts.get(owner, {}).items() if k[0] == kind}

    # -- ids and ownership ---------------------------------------------------------------------
    def new_id(self, wanted: str | None, owner: int) -> str:
        """A free id in ``owner``'s namespace: ``wanted`` (checked against the rule) or a
        fresh one. Only ``owner``'s own sessions can make ``wanted`` taken."""
        if wanted is None:
            return new_session_id()
        check_session_id(wanted)
        if scoped(owner, wanted) in self._sessions:
            raise MediaError(SESSION_EXISTS, "a session with this id exists", session=wanted)
        return wanted

    def owned(self, sid: str, uid: int) -> MediaSession | None:
        """``uid``'s session ``sid``, None if it has none: every uid (root too) sees its own
        namespace only, so another uid's session of the same id is never reached."""
        return self._sessions.get(scoped(uid, sid))

    def get(self, sid: str, owner: int) -> MediaSession | None:
        return self._sessions.get(scoped(owner, sid))

    def by_key(self, key: str) -> MediaSession | None:
        """The session under its internal key (:func:`scoped`)."""
        return self._sessions.get(key)

    # -- life cycle ------------------------------------------------------------------------------
    def check_room(self, what: str, offer: bool = True) -> None:
        """Refuse (``media.too_many_sessions``) a new session before anything goes out for it:
        an offer when ``max_pending`` offers wait, any session when live sessions and
        waiting offers reach ``max_sessions`` (an offer counts: its answer must find room).
        Offers past their TTL are dropped first (:meth:`reap`)."""
        self.reap()
        pending = self._count(None, _PENDING)
        if offer and pending >= self.max_pending:
            raise MediaError(TOO_MANY_SESSIONS, f"too many {what} wait for an answer", limit=self.max_pending)
        if pending + self._count(None, _LIVE) >= self.max_sessions:
            raise MediaError(TOO_MANY_SESSIONS, "too many media sessions", limit=self.max_sessions)

    def offer(
        self,
        sid: str,
        owner: int,
        kind: str,
        offer: LocalOffer | PendingOffer,
        media: list[str],
        conn: int | None = None,
    ) -> MediaSession:
        """Our offer, waiting for the peer's answer (``sid`` from :meth:`new_id`); ``conn``:
        the connection it dies with (:meth:`connection_closed`)."""
        s = MediaSession(sid, owner, kind, Phase.OFFERED, offer=offer, media=list(media))
        s.conn, s.since = conn, self.clock()
        self._sessions[s.key] = s
        self._tally(s, +1)
        return s

    def take_offer(self, sid: str, uid: int, kind: str) -> MediaSession:
        """The offer waiting under ``sid`` for ``uid``, or ``media.unknown_session``."""
        s = self._sessions.get(scoped(uid, sid))
        if s is None or s.phase is not Phase.OFFERED or s.kind != kind:
            what = "SDES" if kind == "sdes" else "MIKEY"
            raise MediaError(UNKNOWN_SESSION, f"no {what} offer waits under this session", session=sid)
        return s

    def activate(
        self, sid: str, owner: int, kind: str, phase: Phase = Phase.ACTIVE, media: list[str] | None = None
    ) -> MediaSession:
        """The session's keys are in the store now: ``active`` (our offer answered) or
        ``answered`` (we answered the peer's); ``media``: its streams' media names."""
        s = self._sessions.get(scoped(owner, sid))
        if s is None:
            s = self._sessions[scoped(owner, sid)] = MediaSession(sid, owner, kind, phase)
        else:
            self._tally(s, -1)
        s.phase, s.offer, s.media = phase, None, list(media or [])
        self._tally(s, +1)
        if self.on_new is not None:
            self.on_new(s)
        return s

    def end(self, sid: str, owner: int, kind: str, reason: str) -> MediaSession:
        """A negotiation that ended without keys in the store (``policy_refused``: the policy
        refused them; ``unprotected``: the answer keyed no stream). The session stays, closed,
        so ``session.keys`` can say why, until ``session.close``."""
        s = self._sessions.get(scoped(owner, sid))
        if s is None:
            s = self._sessions[scoped(owner, sid)] = MediaSession(sid, owner, kind, Phase.CLOSED)
        else:
            self._tally(s, -1)
        s.phase, s.offer, s.ended = Phase.CLOSED, None, reason
        self._tally(s, +1)
        self._trim()
        return s

    def drop(self, sid: str, owner: int) -> MediaSession | None:
        """Forget ``owner``'s session ``sid`` (``session.close``; an offer that failed)."""
        s = self._sessions.pop(scoped(owner, sid), None)
        if s is not None:
            self._tally(s, -1)
        return s

    def withdrawn(self, key: str, reason: str) -> None:
        """The key store withdrew the keys stored under ``key`` (``compromised``, ``exhausted``)."""
        s = self._sessions.get(key)
        if s is not None and s.phase is not Phase.CLOSED:
            self._tally(s, -1)
            s.phase, s.ended = Phase.CLOSED, reason
            self._tally(s, +1)
            self._trim()

    def _trim(self) -> None:
        """Forget the oldest closed sessions beyond ``max_closed`` (they hold no keys; the key
        store keeps its own bounded record of why keys went)."""
        while len(self._closed) > self.max_closed:
            key = next(iter(self._closed))
            s = self._sessions.pop(key)
            self._tally(s, -1)

    def _discard(self, s: MediaSession) -> None:
        self._sessions.pop(s.key, None)
        self._tally(s, -1)
        if self.on_drop is not None:
            self.on_drop(s)

    def reap(self) -> int:
        """Drop the offers that waited longer than ``offer_ttl`` (``on_drop`` zeroizes their
        keys); how many. Offers are kept oldest first: this looks at the expired ones only."""
        limit = self.clock() - self.offer_ttl
        old = []
        for key in self._offers:
            s = self._sessions[key]
            if s.since > limit:
                break
            old.append(s)
        for s in old:
            self._discard(s)
        return len(old)

    def has_offers(self, conn: int) -> bool:
        """``conn`` made offers that still wait for their answer."""
        return any(self._sessions[k].conn == conn for k in self._offers)

    def connection_closed(self, conn: int) -> int:
        """The connection ``conn`` is gone: the offers it made are dropped (nobody is left to
        complete them); how many."""
        gone = [self._sessions[k] for k in self._offers if self._sessions[k].conn == conn]
        for s in gone:
            self._discard(s)
        return len(gone)

    # -- SRVCC and IP mobility: the transitions, once ----------------------------------------------
    def _move(
        self, s: MediaSession, phase: Phase, *, ended: str | None = None, rekey: bool | None = None
    ) -> Decision:
        old = s.handover
        assert old is not None
        self._tally(s, -1)
        if phase is Phase.HANDOVER:
            s.resume = s.phase
        s.phase = phase
        if ended is not None:
            s.ended = ended
        if rekey is not None:
            s.rekey_required = rekey
        self._tally(s, +1)
        new = s.handover
        assert new is not None
        return Decision(s.id, s.owner, old, new, release_keys=ended == "handed_over")

    def srvcc(self, event: Srvcc) -> list[Decision]:
        """Apply an SRVCC report to every live session (TS 27.007 +CIREPH; policy in docs/api.md):

        - started: sessions keep their keys (the call is still on PS until success);
          active ones (not waiting for a re-key) become ``handover``;
        - success: the voice (and video) leg is on CS now (TS 23.216; docs/handover.md). A
          session of voice/video media only is closed as handed over and its keys are
          released; a session that also carries other media (MSRP, BFCP) loses the voice
          media's keys only and goes back to its phase; a session without voice goes back
          untouched (its PS bearer stays). A return to PS needs a new offer/answer;
        - cancelled / failure: the call stays on PS; ``handover`` sessions go back.
        """
        out: list[Decision] = []
        for s in self._sessions.values():
            if event is Srvcc.STARTED:
                if s.phase in (Phase.ACTIVE, Phase.ANSWERED) and not s.rekey_required:
                    out.append(self._move(s, Phase.HANDOVER))
            elif event is Srvcc.SUCCESS:
                if s.live:
                    out.append(self._to_cs(s))
            elif s.phase is Phase.HANDOVER:  # cancelled, failure
                out.append(self._move(s, s.resume or Phase.ACTIVE))
        self._trim()
        return out

    def _to_cs(self, s: MediaSession) -> Decision:
        voice = [m for m in s.media if m in VOICE_MEDIA]
        if not s.media or len(voice) == len(s.media):  # (no names known: as voice)
            return self._move(s, Phase.CLOSED, ended="handed_over")
        back = (s.resume or Phase.ACTIVE) if s.phase is Phase.HANDOVER else s.phase
        d = self._move(s, back)
        if not voice:
            return d
        s.media = [m for m in s.media if m not in VOICE_MEDIA]
        s.moved = [*s.moved, *voice]
        return Decision(d.session, d.owner, d.old, d.new, release_media=tuple(voice))

    def require_rekey(self, sid: str, owner: int) -> Decision | None:
        """One live session needs a re-key (its keys stay)."""
        s = self._sessions.get(scoped(owner, sid))
        if s is None or not s.live or s.rekey_required:
            return None
        phase = (s.resume or Phase.ACTIVE) if s.phase is Phase.HANDOVER else s.phase
        return self._move(s, phase, rekey=True)

    def ip_lost(self) -> list[Decision]:
        """An address or link of the media went away: live sessions need a re-key (keys stay,
        so a media stack that keeps its SRTP context is not cut)."""
        out: list[Decision] = []
        for s in self._sessions.values():
            if s.live and not s.rekey_required:
                phase = (s.resume or Phase.ACTIVE) if s.phase is Phase.HANDOVER else s.phase
                out.append(self._move(s, phase, rekey=True))
        return out

    # -- views -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Sessions whose keys are in the store."""
        return self._count(None, _LIVE)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sessions

    def sessions(self) -> list[MediaSession]:
        return list(self._sessions.values())

    @property
    def pending_offers(self) -> int:
        return self._count(None, _PENDING)

    def count_live(self, owner: int | None = None) -> int:
        """Sessions whose keys are in the store (``owner``: only that uid's)."""
        return self._count(owner, _LIVE)

    def count_pending(self, owner: int | None = None) -> int:
        """Offers waiting for their answer (``owner``: only that uid's)."""
        return self._count(owner, _PENDING)

    def count_by_state(self, owner: int | None = None) -> dict[str, int]:
        """Live sessions by their keys' state (``status`` ``sessions.by_state``); ``owner``:
        only that uid's."""
        return self._counted(owner, "state")

    def count_by_handover(self, owner: int | None = None) -> dict[str, int]:
        """Sessions by handover state (``status`` ``handover.sessions``); ``owner``: only that
        uid's."""
        return self._counted(owner, "handover")

    def clear(self) -> list[MediaSession]:
        """Forget every session (shutdown); returns them so their offers can be zeroized."""
        out = list(self._sessions.values())
        self._sessions.clear()
        self._offers.clear()
        self._closed.clear()
        self._counts = {None: {}}
        return out
