"""The session key store and its key-stream reuse guard (sans-IO).

Sessions (SDES or MIKEY) hold the keys of their streams. The media stack fetches them
with :meth:`KeyStore.keys` and reports how far each SSRC's packet index has gone with
:meth:`KeyStore.report`. The guard (RFC 3711 8 and 9.1; docs/media.md "key store"):

- AES-CM and GCM keystream is a function of (session key, salt, SSRC, index). A master key
  used again at an index already used is a two-time pad. So:
  * a reported index that goes backwards for an SSRC means the media stack restarted a
    context with the same key: the session is *compromised*, its keys are zeroized, further
    ``keys()`` are refused with ``media.key_reuse`` and a ``security.warning`` is emitted;
  * keys are handed out again only together with the current ROC and highest index per
    SSRC, so a restarted stack continues the index instead of starting at 0;
  * after ``close``/``release`` the keys are zeroized and a keyed fingerprint of each master
    key is remembered: the same key can never be registered for a new session
    (``media.key_reuse``), e.g. an SDES key copied into a re-INVITE after a handover.
- Limits: 2^48 SRTP / 2^31 SRTCP packets per master key (RFC 3711 §9.2), or the smaller
  SDES lifetime. Near the limit a ``security.warning`` asks for re-keying; at the limit the
  keys are refused (``media.key_exhausted``).
- SRVCC: the session registry (:mod:`ue_agent.media.sessions`) decides; a handed-over
  session's keys are released here (:meth:`KeyStore.release`) and later ``keys()`` get
  ``media.session_released`` (a return to PS needs a new offer/answer).

The store keeps keys and the reuse guard only: who owns a session and which phase it is
in are the registry's. A withdrawal (index back, limit reached) is reported to
``on_withdrawn(session id, reason)`` so the registry closes the session.

Events go through ``on_event(name, info)``; ``info`` never holds key bytes.
All work per call is a dict lookup or two; fingerprints are computed once per key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ue_agent.errors import MediaError
from ue_agent.media.keys import SrtpKeys, StreamKeys, TlsPskKeys
from ue_agent.media.sessions import (
    BAD_SESSION,
    SESSION_EXISTS,
    STORE_ID,
    TOO_MANY_SESSIONS,
    UNKNOWN_SESSION,
    new_session_id,
    unscoped,
)
from ue_agent.secret import Secret

SRTP_LIMIT = 2**48  # packets per master key (RFC 3711 §9.2)
SRTCP_LIMIT = 2**31  # SRTCP index space (RFC 3711 §3.4)
REKEY_MARGIN_FRACTION = 64  # warn when 1/64 of the key's packet budget is left

KEY_REUSE = "media.key_reuse"
KEY_EXHAUSTED = "media.key_exhausted"
SESSION_RELEASED = "media.session_released"

__all__ = [
    "BAD_SESSION",
    "KEY_EXHAUSTED",
    "KEY_REUSE",
    "SESSION_EXISTS",
    "SESSION_RELEASED",
    "SRTCP_LIMIT",
    "SRTP_LIMIT",
    "TOO_MANY_SESSIONS",
    "UNKNOWN_SESSION",
    "KeyState",
    "KeyStore",
]

Emit = Callable[[str, dict[str, Any]], None]


class KeyState(StrEnum):
    """The state of a session's keys."""

    ACTIVE = "active"
    RELEASED = "released"  # SRVCC to CS done: keys zeroized
    COMPROMISED = "compromised"  # an index went backwards: keys zeroized
    EXHAUSTED = "exhausted"  # packet limit reached: keys zeroized


@dataclass
class SsrcState:
    """Highest packet index seen for one SSRC (ROC = index >> 16)."""

    index: int = -1
    srtcp_index: int = -1
    warned: bool = False

    @property
    def roc(self) -> int:
        return max(self.index, 0) >> 16

    def to_wire(self, ssrc: int) -> dict[str, int]:
        out = {"ssrc": ssrc, "roc": self.roc, "index": max(self.index, 0), "seq": max(self.index, 0) & 0xFFFF}
        if self.srtcp_index >= 0:
            out["srtcp_index"] = self.srtcp_index
        return out


@dataclass
class Keys:
    """One session's keys and their bookkeeping."""

    id: str
    kind: str  # "sdes" or "mikey"
    peer: str | None
    streams: list[StreamKeys]
    state: KeyState = KeyState.ACTIVE
    handed_out: int = 0
    ssrcs: dict[int, SsrcState] = field(default_factory=dict)
    fingerprints: list[bytes] = field(default_factory=list)
    srtp_limit: int = SRTP_LIMIT
    #: SSRCs of streams released by SRVCC (the session's other streams live on)
    released_ssrcs: set[int] = field(default_factory=set)
    #: the offer this session answers (early dialogs and the final answer share it)
    group: str | None = None
    #: the streams' wire form, encoded once (keys_wire): the ROCs it holds and its bytes,
    #: zeroized with the session
    wire: tuple[tuple[int | None, ...], bytearray] | None = field(default=None, repr=False)
    #: the id as its owner named it (replies), made once
    public: str = field(init=False, repr=False)
    #: the last ``session.keys`` reply made of these keys and what it was made of
    #: (ue_agent.ops.session): dropped with ``wire``, whose buffer it refers to
    reply_memo: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.public = _public(self.id)

    def summary(self) -> dict[str, Any]:
        return {
            "session": self.id,
            "kind": self.kind,
            "peer": self.peer,
            "state": str(self.state),
            "streams": [{"media": s.media, "suite": s.suite, "kind": _kind(s)} for s in self.streams],
            "handed_out": self.handed_out,
            "ssrcs": [st.to_wire(ssrc) for ssrc, st in sorted(self.ssrcs.items())],
        }

    def zeroize(self) -> None:
        self.drop_wire()
        for s in self.streams:
            s.zeroize()

    def drop_wire(self) -> None:
        self.reply_memo = None
        if self.wire is not None:
            buf = self.wire[1]
            buf[:] = bytes(len(buf))
            self.wire = None


def _public(session_id: object) -> str:
    """The id as its owner named it (errors and replies never show another uid's scope)."""
    return unscoped(session_id)[1][:128] if isinstance(session_id, str) else str(session_id)[:128]


def _kind(s: StreamKeys) -> str:
    return "tls-psk" if isinstance(s.tx, TlsPskKeys) else "srtp"


def _master_keys(streams: Iterable[StreamKeys]) -> Iterable[SrtpKeys | TlsPskKeys]:
    for s in streams:
        yield s.tx
        if s.rx is not None:
            yield s.rx


class KeyStore:
    """Media keys per session, with the reuse guard. Not thread-safe: use from one loop."""

    def __init__(
        self,
        on_event: Emit | None = None,
        *,
        on_withdrawn: Callable[[str, str], None] | None = None,
        max_sessions: int = 64,
        max_retired: int = 4096,
        max_tombstones: int = 256,
    ) -> None:
        if max_sessions < 1 or max_retired < 1 or max_tombstones < 1:
            raise ValueError("limits must be positive")
        self._emit = on_event or (lambda name, info: None)
        self._on_withdrawn = on_withdrawn
        self.max_sessions = max_sessions
        self._sessions: dict[str, Keys] = {}
        # keyed fingerprints of every master key ever registered and then retired
        self._fp_key = secrets.token_bytes(32)
        self._live_fps: dict[bytes, str] = {}
        self._retired: OrderedDict[bytes, None] = OrderedDict()
        self._max_retired = max_retired
        # why a closed/released session is gone, so a late keys() gets a precise answer
        self._tombstones: OrderedDict[str, KeyState] = OrderedDict()
        self._max_tombstones = max_tombstones

    # -- registration ---------------------------------------------------------------------------
    def _fingerprint(self, k: SrtpKeys | TlsPskKeys) -> bytes:
        h = hmac.new(self._fp_key, digestmod=hashlib.sha256)
        for part in (k.master_key, k.master_salt) if isinstance(k, SrtpKeys) else (k.key,):
            part.feed(h)  # read in place: no bytes copy of the key is made
        return h.digest()[:16]

    def _check_fresh(self, session_id: str, fp: bytes, taken: list[bytes]) -> None:
        """Refuse (``media.key_reuse``) a master key used before in this process: retired,
        live in a session, or already in this request (``taken``)."""
        if fp in self._retired or fp in self._live_fps or fp in taken:
            self._warn(session_id, "key_reuse", "a master key was offered for use a second time")
            raise MediaError(
                KEY_REUSE, "this master key was used before; re-key", session=_public(session_id)
            )

    def _trim_retired(self) -> None:
        while len(self._retired) > self._max_retired:
            self._retired.popitem(last=False)

    def add(
        self,
        streams: Sequence[StreamKeys],
        *,
        kind: str,
        peer: str | None = None,
        session_id: str | None = None,
        group: str | None = None,
    ) -> str:
        """Register a negotiated session; returns its id. The store owns the keys from now on.

        Refuses (and zeroizes the given keys) when a master key was used before in this
        process (``media.key_reuse``) or the session limit is reached. ``group``: the early
        dialogs of one offer and its final session (RFC 3261 forking): they may share our
        ``tx`` key (the one our SDES offer carried to every fork), nothing else.
        """
        try:
            if kind not in ("sdes", "mikey"):
                raise MediaError(BAD_SESSION, "kind is 'sdes' or 'mikey'", kind=str(kind)[:20])
            if not streams:
                raise MediaError(BAD_SESSION, "a session needs at least one stream")
            if session_id is None:
                session_id = new_session_id()
            elif not isinstance(session_id, str) or not STORE_ID.fullmatch(session_id):
                raise MediaError(BAD_SESSION, "session id: 1-128 of A-Z a-z 0-9 . _ : @ + -")
            if session_id in self._sessions:
                raise MediaError(SESSION_EXISTS, "a session with this id exists", session=_public(session_id))
            if len(self._sessions) >= self.max_sessions:
                raise MediaError(TOO_MANY_SESSIONS, "too many media sessions", limit=self.max_sessions)
            fps: list[bytes] = []
            ours = {id(s.tx) for s in streams}
            for k in _master_keys(streams):
                fp = self._fingerprint(k)
                holder = self._sessions.get(self._live_fps.get(fp, ""))
                shared = group is not None and holder is not None and holder.group == group
                if shared and id(k) in ours and fp not in self._retired:  # our offer's key, to a fork
                    fps.append(fp)
                    continue
                self._check_fresh(session_id, fp, fps)
                fps.append(fp)
        except MediaError:
            for s in streams:
                s.zeroize()
            raise
        sess = Keys(session_id, kind, peer, list(streams), fingerprints=fps, group=group)
        lifetimes = [s.max_packets for s in streams if s.max_packets is not None]
        sess.srtp_limit = min([SRTP_LIMIT, *lifetimes])
        for s in streams:  # MIKEY gives the sender's SSRC and ROC: start the floor there
            for key in (s.tx, s.rx):
                if isinstance(key, SrtpKeys) and key.ssrc is not None:
                    st = sess.ssrcs.setdefault(key.ssrc, SsrcState())
                    st.index = max(st.index, key.roc << 16)
        for fp in fps:
            self._live_fps.setdefault(fp, session_id)
        self._sessions[session_id] = sess
        self._tombstones.pop(session_id, None)
        return session_id

    # -- hand-out and bookkeeping ----------------------------------------------------------------
    def _get(self, session_id: str) -> Keys:
        sess = self._sessions.get(session_id)
        if sess is not None:
            return sess
        gone = self._tombstones.get(session_id)
        if gone is KeyState.COMPROMISED:
            raise MediaError(
                KEY_REUSE, "this session's keys were withdrawn (index went back)", session=_public(session_id)
            )
        if gone is KeyState.RELEASED:
            raise MediaError(
                SESSION_RELEASED, "the session moved to CS; negotiate fresh keys", session=_public(session_id)
            )
        if gone is KeyState.EXHAUSTED:
            raise MediaError(
                KEY_EXHAUSTED, "the keys reached their packet limit; re-key", session=_public(session_id)
            )
        raise MediaError(UNKNOWN_SESSION, "no such media session", session=_public(session_id))

    def keys(self, session_id: str, reply: bool = False) -> dict[str, Any]:
        """Hand the session's keys to the media stack, with the current ROC per SSRC.

        The result is the wire form (base64 keys) for an authorized socket peer; each SRTP
        key carries the ROC of its SSRC when one has been reported. ``reply``: the keys as
        :class:`~ue_agent.secret.SecretText` for the API's reply encoder.
        """
        sess = self._get(session_id)
        sess.handed_out += 1
        return self.head(sess, self._streams_wire(sess, reply))

    def keys_wire(self, session_id: str, encode: Callable[[Any], bytearray]) -> Keys:
        """:meth:`keys` for the API: the session's :class:`Keys` (errors as for :meth:`keys`),
        counted as handed out, with ``wire`` made: the streams encoded by ``encode`` (the
        API's JSON encoder for key material) once per session -- again only when a ROC in it
        changed --, a ``bytearray`` that stays with the session and is zeroized with it
        (:meth:`head` and ``wire`` make the reply; the caller must not keep or change it)."""
        sess = self._get(session_id)
        sess.handed_out += 1
        rocs = self._rocs(sess)
        if sess.wire is None or sess.wire[0] != rocs:
            fresh = encode(self._streams_wire(sess, True))
            sess.drop_wire()
            sess.wire = (rocs, fresh)
        return sess

    @staticmethod
    def _rocs(sess: Keys) -> tuple[int | None, ...]:
        rocs = sess.ssrcs
        if not rocs:
            return ()
        out: list[int | None] = []
        for s in sess.streams:
            for k in (s.tx, s.rx):
                ssrc = k.ssrc if isinstance(k, SrtpKeys) else None
                out.append(rocs[ssrc].roc if ssrc is not None and ssrc in rocs else None)
        return tuple(out) if any(r is not None for r in out) else ()

    @staticmethod
    def _streams_wire(sess: Keys, reply: bool) -> list[dict[str, Any]]:
        rocs = sess.ssrcs
        streams = []
        for s in sess.streams:
            w = s.to_wire(reply)
            for direction in ("tx", "rx"):
                k = getattr(s, direction)
                if isinstance(k, SrtpKeys) and k.ssrc is not None and k.ssrc in rocs:
                    w[direction]["roc"] = rocs[k.ssrc].roc
            streams.append(w)
        return streams

    @staticmethod
    def head(sess: Keys, streams: Any) -> dict[str, Any]:
        """The ``session.keys`` members the store knows, ``streams`` as given."""
        return {
            "session": sess.public,
            "kind": sess.kind,
            "state": str(sess.state),
            "streams": streams,
            "ssrcs": [st.to_wire(ssrc) for ssrc, st in sorted(sess.ssrcs.items())] if sess.ssrcs else [],
        }

    def streams(self, session_id: str) -> list[StreamKeys]:
        """The key objects themselves (in-process users such as the lab media peers)."""
        return list(self._get(session_id).streams)

    def report(
        self, session_id: str, ssrc: int, index: int, *, srtcp_index: int | None = None
    ) -> dict[str, Any]:
        """The media stack's highest packet index for ``ssrc``; returns that SSRC's ROC and index.

        An index lower than one reported before means a context restarted under the same
        key (keystream reuse): the session is withdrawn with ``media.key_reuse``.
        """
        if not isinstance(ssrc, int) or not 0 <= ssrc < 2**32:
            raise MediaError(BAD_SESSION, "ssrc is a 32-bit unsigned integer")
        if not isinstance(index, int) or not 0 <= index < SRTP_LIMIT:
            raise MediaError(BAD_SESSION, "index is a 48-bit unsigned integer")
        if srtcp_index is not None and (
            not isinstance(srtcp_index, int) or not 0 <= srtcp_index < SRTCP_LIMIT
        ):
            raise MediaError(BAD_SESSION, "srtcp_index is a 31-bit unsigned integer")
        sess = self._get(session_id)
        if ssrc in sess.released_ssrcs:
            raise MediaError(
                SESSION_RELEASED,
                "this SSRC's stream moved to CS; its keys are released",
                session=_public(sess.id),
            )
        st = sess.ssrcs.setdefault(ssrc, SsrcState())
        if index < st.index or (srtcp_index is not None and srtcp_index < st.srtcp_index):
            self._withdraw(sess, KeyState.COMPROMISED)
            self._warn(
                sess.id,
                "key_reuse",
                "a packet index went backwards: the media stack restarted a context under the same key",
                ssrc=ssrc,
                index=index,
                previous=st.index,
            )
            raise MediaError(
                KEY_REUSE, "the packet index went backwards; keys withdrawn, re-key", session=_public(sess.id)
            )
        st.index = index
        if srtcp_index is not None:
            st.srtcp_index = srtcp_index
        limit = sess.srtp_limit
        if index >= limit - 1 or (srtcp_index is not None and srtcp_index >= SRTCP_LIMIT - 1):
            self._withdraw(sess, KeyState.EXHAUSTED)
            self._warn(sess.id, "key_exhausted", "the key reached its packet limit", ssrc=ssrc)
            raise MediaError(
                KEY_EXHAUSTED, "the key reached its packet limit; re-key", session=_public(sess.id)
            )
        near = index >= limit - limit // REKEY_MARGIN_FRACTION or (
            srtcp_index is not None and srtcp_index >= SRTCP_LIMIT - SRTCP_LIMIT // REKEY_MARGIN_FRACTION
        )
        if near and not st.warned:
            st.warned = True
            self._warn(sess.id, "rekey_required", "the key is close to its packet limit", ssrc=ssrc)
        return st.to_wire(ssrc)

    # -- end of life -----------------------------------------------------------------------------
    def close(self, session_id: str) -> None:
        """Zeroize the session's keys and forget it; its keys can never be registered again."""
        sess = self._sessions.get(session_id)
        if sess is None:
            if session_id in self._tombstones:
                del self._tombstones[session_id]
                return
            raise MediaError(UNKNOWN_SESSION, "no such media session", session=_public(session_id))
        self._retire(sess)
        del self._sessions[session_id]

    def release(self, session_id: str) -> None:
        """SRVCC to CS done for this session: zeroize; later ``keys()`` get ``media.session_released``."""
        sess = self._sessions.get(session_id)
        if sess is not None:
            self._withdraw(sess, KeyState.RELEASED)

    def rename(self, old: str, new: str) -> None:
        """An early dialog's keys become the session's (the final answer confirmed them)."""
        sess = self._sessions.get(old)
        if sess is None:
            raise MediaError(UNKNOWN_SESSION, "no such media session", session=_public(old))
        if new in self._sessions:
            raise MediaError(SESSION_EXISTS, "a session with this id exists", session=_public(new))
        del self._sessions[old]
        sess.id, sess.public = new, _public(new)
        self._sessions[new] = sess
        for fp in sess.fingerprints:
            if self._live_fps.get(fp) == old:
                self._live_fps[fp] = new

    def rekey(self, session_id: str, new: dict[int, StreamKeys]) -> None:
        """New keys for some streams of a live session (a conference re-key: ``new`` by stream
        index). The old keys are zeroized and retired (never registered again), the new ones
        checked as :meth:`add` checks them, and their SSRCs start a new index floor. All or
        nothing: on refusal the session is unchanged and ``new`` is zeroized."""
        try:
            sess = self._get(session_id)
            if any(not 0 <= i < len(sess.streams) for i in new):
                raise MediaError(BAD_SESSION, "no such stream in the session", session=_public(session_id))
            fps: list[bytes] = []
            for k in _master_keys(new.values()):
                fp = self._fingerprint(k)
                self._check_fresh(session_id, fp, fps)
                fps.append(fp)
        except MediaError:
            for s in new.values():
                s.zeroize()
            raise
        for i, s in new.items():
            old = sess.streams[i]
            for k in _master_keys([old]):
                fp = self._fingerprint(k)
                if self._live_fps.get(fp) == session_id:
                    del self._live_fps[fp]
                self._retired[fp] = None
                if fp in sess.fingerprints:
                    sess.fingerprints.remove(fp)
                if isinstance(k, SrtpKeys) and k.ssrc is not None:
                    sess.ssrcs.pop(k.ssrc, None)
            old.zeroize()
            sess.streams[i] = s
            for k in _master_keys([s]):
                if isinstance(k, SrtpKeys) and k.ssrc is not None:
                    sess.ssrcs[k.ssrc] = SsrcState(index=k.roc << 16)
        for fp in fps:
            self._live_fps[fp] = session_id
            sess.fingerprints.append(fp)
        self._trim_retired()
        sess.drop_wire()

    def release_media(self, session_id: str, media: Iterable[str]) -> list[str]:
        """SRVCC moved these media of the session to CS: their streams' keys are zeroized and
        retired (never registered again); the other streams stay. Returns the media released."""
        sess = self._sessions.get(session_id)
        if sess is None:
            return []
        names = set(media)
        gone = [s for s in sess.streams if s.media in names]
        for s in gone:
            for k in _master_keys([s]):
                if isinstance(k, SrtpKeys) and k.ssrc is not None:
                    sess.released_ssrcs.add(k.ssrc)
                fp = self._fingerprint(k)
                self._live_fps.pop(fp, None)
                self._retired[fp] = None
            s.zeroize()
        sess.streams = [s for s in sess.streams if s.media not in names]
        sess.drop_wire()  # the cached wire form held the released keys too
        self._trim_retired()
        if not sess.streams:
            self._withdraw(sess, KeyState.RELEASED)
        return [s.media for s in gone]

    def _withdraw(self, sess: Keys, why: KeyState) -> None:
        sess.state = why
        self._retire(sess)
        self._sessions.pop(sess.id, None)
        self._tombstones[sess.id] = why
        while len(self._tombstones) > self._max_tombstones:
            self._tombstones.popitem(last=False)
        if self._on_withdrawn is not None and why is not KeyState.RELEASED:
            self._on_withdrawn(sess.id, why.value)

    def _retire(self, sess: Keys) -> None:
        sess.zeroize()
        for fp in sess.fingerprints:
            self._live_fps.pop(fp, None)
            self._retired[fp] = None
        self._trim_retired()

    def secrets(self) -> list[Secret]:
        """Every key the store holds (the shutdown count; never handed out from here)."""
        out: list[Secret] = []
        for sess in self._sessions.values():
            for k in _master_keys(sess.streams):
                out += [k.master_key, k.master_salt] if isinstance(k, SrtpKeys) else [k.key]
        return out

    def zeroize_all(self) -> int:
        """Daemon shutdown: zeroize every session; returns how many there were."""
        n = len(self._sessions)
        for sess in list(self._sessions.values()):
            self._retire(sess)
        self._sessions.clear()
        return n

    # -- introspection ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def state(self, session_id: str) -> KeyState:
        if session_id in self._sessions:
            return self._sessions[session_id].state
        if session_id in self._tombstones:
            return self._tombstones[session_id]
        raise MediaError(UNKNOWN_SESSION, "no such media session", session=_public(session_id))

    def snapshot(self) -> list[dict[str, Any]]:
        """Status view (no key bytes)."""
        return [s.summary() for s in self._sessions.values()]

    def _warn(self, session_id: str, kind: str, message: str, **info: Any) -> None:
        self._emit("security.warning", {"kind": kind, "session": session_id, "message": message, **info})

    def __repr__(self) -> str:
        return f"<KeyStore sessions={len(self._sessions)} retired={len(self._retired)}>"
