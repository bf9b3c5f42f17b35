"""How a media session is protected, and what the [policy] says about it (sans-IO).

TR 33.828 asks that the user can see how a call is protected and is warned when it is not
(requirements 47, 48, 50, 51; clauses 7.1.4.4.5 and 7.1.5.2.2). Every session the agent keys
carries a :class:`Protection`:

- ``scope``: ``e2e-kms`` (MIKEY-TICKET, TS 33.328 clause 7.2: the keys never appear in the
  signalling), ``e2e-sdes`` (SDES end to end, RFC 4568: the keys ride in the SDP, readable by
  every SIP hop), ``e2ae`` (SDES to the IMS access gateway, TS 33.328 clause 7.1, an answer
  with ``a=3ge2ae:applied``), ``none`` (no key for a medium the call carries). After SRVCC a
  voice medium is ``cs-radio``: only the CS radio link is ciphered (TS 23.216 clause 6.2.2; TR
  33.829 clause 6.2), ranked as ``none``.
- ``mechanism``, the authenticated ``peer`` (the KMS-vouched responder for the caller: the
  IDRr modifier of a forked TRANSFER_RESP, RFC 6043 5.1.1; the ticket's initiator for the
  called party), whether the peer is the party ``requested`` and within the ``recipients``.

:func:`evaluate` turns a protection and the policy into :class:`Finding` values: a
``security.warning`` kind and whether the policy refuses. The agent applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ue_agent.config import PolicyConfig

E2E_KMS = "e2e-kms"
E2E_SDES = "e2e-sdes"
E2AE = "e2ae"
NONE = "none"
CS_RADIO = "cs-radio"  # a medium moved to CS by SRVCC: radio ciphering only
SCOPES = (E2E_KMS, E2E_SDES, E2AE, NONE)

#: the stable names of the security.warning kinds this module produces
UNPROTECTED = "unprotected"
DOWNGRADED = "downgraded"
RESPONDER_MISMATCH = "responder_mismatch"
PROTECTION_LOST = "protection_lost"
EARLY_MEDIA_PLAINTEXT = "early_media_plaintext"

REFUSED = "policy.refused"

#: what each scope is worth against a [policy] minimum
_RANK = {E2E_KMS: 3, E2E_SDES: 1, E2AE: 1, NONE: 0, CS_RADIO: 0}
#: a [policy] minimum -> the rank a scope needs: "e2e" is end to end with keys out of the
#: signalling (KMS); SDES keys cross every SIP hop in the SDP (RFC 4568 section 8.3), so
#: SDES end to end counts like e2ae
_NEEDED = {"e2e": 3, "e2ae": 1, "none": 0}

VOICE_MEDIA = frozenset({"audio", "video"})


def weakest(scopes: list[str]) -> str:
    """The session's scope: its weakest medium (``cs-radio`` reported as ``none``)."""
    if not scopes:
        return NONE
    worst = scopes[0] if len(scopes) == 1 else min(scopes, key=lambda s: _RANK.get(s, 0))
    return NONE if worst == CS_RADIO else worst


@dataclass
class Protection:
    """A session's protection as the API reports it (``protection`` in replies and events)."""

    mechanism: str  # "mikey-ticket", "sdes", "none"
    #: medium name -> its scope (SCOPES or cs-radio), in stream order
    media: dict[str, str] = field(default_factory=dict)
    peer: str | None = None
    peer_authenticated: bool = False
    requested: str | None = None  # the party the caller called (caller side only)
    recipients: list[str] | None = None  # the ticket's recipients (caller side, MIKEY)
    intended: bool | None = None  # peer == requested
    in_recipients: bool | None = None  # peer within recipients
    #: the caller withheld its identity (peer is "anonymous"; TR 33.828 req. 49, kms/anonymity.py)
    anonymous: bool = False
    #: the caller's view of a diverted call: the party called, as the diverted-to user's
    #: TRANSFER_RESP names it (TR 33.829 9.2, kms/divert.py)
    diverted_from: str | None = None

    @property
    def scope(self) -> str:
        return weakest(list(self.media.values()))

    def fingerprint(self) -> tuple[Any, ...]:
        """Every field, as a tuple that compares equal exactly when :meth:`to_wire` would
        write the same (the fields hold the types they are declared with)."""
        return (
            self.mechanism,
            tuple(self.media.items()),
            self.peer,
            self.peer_authenticated,
            self.requested,
            tuple(self.recipients) if self.recipients is not None else None,
            self.intended,
            self.in_recipients,
            self.anonymous,
            self.diverted_from,
        )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope, "mechanism": self.mechanism, "media": dict(self.media)}
        out["peer"] = self.peer
        out["peer_authenticated"] = self.peer_authenticated
        if self.anonymous:
            out["anonymous"] = True
        if self.diverted_from is not None:
            out["diverted_from"] = self.diverted_from
        if self.requested is not None:
            out["requested"] = self.requested
            out["intended"] = self.intended
        if self.recipients is not None:
            out["recipients"] = list(self.recipients)
            out["in_recipients"] = self.in_recipients
        return out


def mikey_caller(
    media: list[str], responder: str, authenticated: bool, requested: str, recipients: list[str]
) -> Protection:
    """The caller's view after a TRANSFER_RESP: ``responder`` from its IDRr (KMS-vouched when
    the ticket forks keys, RFC 6043 5.1.1: MPKr' depends on it)."""
    from ue_agent.kms import ids

    req = ids.canonical(requested)
    return Protection(
        "mikey-ticket",
        {m: E2E_KMS for m in media},
        peer=responder,
        peer_authenticated=authenticated,
        requested=req,
        recipients=[ids.pattern(r) for r in recipients],
        intended=responder == req,
        in_recipients=any(ids.matches(responder, ids.pattern(r)) for r in recipients),
    )


def mikey_callee(
    media: list[str], initiator: str, anonymous: bool = False, vouched: bool = True
) -> Protection:
    """The called party's view: the initiator as the KMS vouched for it (the resolved ticket);
    an anonymous caller is ``anonymous``, authenticated when the KMS vouched for it."""
    return Protection(
        "mikey-ticket",
        {m: E2E_KMS for m in media},
        peer="anonymous" if anonymous else initiator,
        peer_authenticated=vouched,
        anonymous=anonymous,
    )


def sdes(media: list[str], e2ae: list[bool], unkeyed: Sequence[str] = ()) -> Protection:
    """SDES: ``e2ae`` per keyed medium (``a=3ge2ae:applied``); ``unkeyed`` media carry no key."""
    scopes = {m: (E2AE if applied else E2E_SDES) for m, applied in zip(media, e2ae, strict=True)}
    for m in unkeyed:
        scopes.setdefault(m, NONE)
    return Protection("sdes" if media else "none", scopes)


@dataclass(frozen=True)
class Finding:
    """One thing the policy has to say about a session."""

    kind: str  # a security.warning kind
    refuse: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def event(self, session: str) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "session": session,
            "message": self.message,
            "action": "refused" if self.refuse else "warned",
            **self.details,
        }


def minimum_for(policy: PolicyConfig, media: str) -> str:
    """The [policy] minimum for a medium (``message``/``msrp`` share one, others ``other``)."""
    m = policy.minimum
    name = {"msrp": "message"}.get(media, media)
    return str(getattr(m, name, m.other)) if name in ("audio", "video", "message", "bfcp") else m.other


def evaluate(policy: PolicyConfig, prot: Protection) -> list[Finding]:
    """What the policy finds wrong with ``prot`` (empty: nothing)."""
    out: list[Finding] = []
    refuse = policy.below_minimum == "refuse"
    for media, scope in prot.media.items():
        minimum = minimum_for(policy, media)
        if _RANK.get(scope, 0) >= _NEEDED[minimum]:
            continue
        kind = UNPROTECTED if _RANK.get(scope, 0) == 0 else DOWNGRADED
        why = "carries no key" if kind == UNPROTECTED else f"is protected {scope} only"
        out.append(
            Finding(
                kind,
                refuse,
                f"{media} {why}; the policy asks for {minimum}",
                {"media": media, "scope": scope, "minimum": minimum},
            )
        )
    if prot.peer is not None and prot.requested is not None and policy.responder != "any":
        ok = prot.intended if policy.responder == "called" else prot.in_recipients
        if not ok:
            out.append(
                Finding(
                    RESPONDER_MISMATCH,
                    policy.responder_mismatch == "refuse",
                    f"answered by {prot.peer}, not "
                    + ("the party called" if policy.responder == "called" else "one of the recipients"),
                    {"peer": prot.peer, "requested": prot.requested, "rule": policy.responder},
                )
            )
    return out


def early_plaintext(policy: PolicyConfig, media: list[str]) -> Finding | None:
    """Early media without a key (a provisional answer without crypto), per the policy."""
    if policy.early_media_plaintext == "allow":
        return None
    return Finding(
        EARLY_MEDIA_PLAINTEXT,
        policy.early_media_plaintext == "refuse",
        "early media arrives without a key (plain RTP)",
        {"media": list(media)},
    )
