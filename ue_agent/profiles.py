"""Hardware profiles: one TOML file per modem family, reader or board (``hw_profiles/``).

A profile records, as data, how the card is reached through a piece of hardware and
the dialect quirks of its AT port, so the driver (:mod:`ue_agent.drivers.at_modem`) and
the modem simulator (:mod:`ue_agent.lab.modem`) read the same facts. The format is
documented in docs/hardware.md ("Modems and hardware profiles"). Unknown keys are an
error naming the key (``config.unknown_key``); wrong types are ``config.invalid``.

Search path, first hit by name wins: ``$UE_AGENT_PROFILES`` (``:``-separated
directories), ``/etc/ue-agent/hw_profiles``, the installed package data
(``ue_agent.hw_profiles``, mapped from ``hw_profiles/`` by pyproject) and the source tree's ``hw_profiles/``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal

from ue_agent.config import config_error
from ue_agent.convert import INTERNAL, ConvertError, convert
from ue_agent.errors import ConfigError

KINDS = ("at", "pcsc", "lab")
ACCESS = {"at": ("csim", "cgla"), "pcsc": ("pcsc",), "lab": ("lab",)}
ETC_DIR = Path("/etc/ue-agent/hw_profiles")
SOURCE_DIR = Path(__file__).resolve().parent.parent / "hw_profiles"
#: URCs every AT profile routes to the URC callback (TS 27.007 8.64, 7.2 of the spec digest).
STANDARD_URCS = ("+CIREPH", "+CIREPI", "+CIREGU")


@dataclass(frozen=True)
class PortHint:
    """Where the AT port of this hardware shows up."""

    by_id: tuple[str, ...] = ()  # glob patterns under /dev/serial/by-id/
    usb_ids: tuple[str, ...] = ()  # "vvvv:pppp"
    pci_ids: tuple[str, ...] = ()  # "vvvv:dddd" (PCIe modules whose AT port is /dev/wwan*)
    baudrate: int = 115200
    note: str = ""


@dataclass(frozen=True)
class ReaderHint:
    """PC/SC reader selection (kind = "pcsc")."""

    name_pattern: str = "*"  # fnmatch pattern on the PC/SC reader name
    note: str = ""


@dataclass(frozen=True)
class CardAccess:
    access: Literal["csim", "cgla", "pcsc", "lab"]
    csim: bool = True  # AT+CSIM is offered
    ccho: bool = False  # AT+CCHO/+CGLA are offered
    cchc: bool = True  # AT+CCHC is offered (Sierra EM9191 has none)
    modem_handles_61xx: bool = False  # the modem runs GET RESPONSE itself and answers data||9000
    # "channel": +CCHO answers the channel number; "opaque": a long handle
    session_id: Literal["channel", "opaque"] = "channel"
    logical_channels: Literal["ccho", "manage_channel", "none"] = "ccho"  # manage_channel: via +CSIM
    ccho_missing_app_cme: int = 13  # +CME ERROR code when the AID is not on the card
    note: str = ""


@dataclass(frozen=True)
class AtDialect:
    """How the modem's AT port differs from TS 27.007 as written."""

    echo_default: bool = True  # ATE1 after power-on (V.250 default)
    colon_space: bool = True  # "+CGLA: 4,..." (False: "+CGLA:4,...", SIMCom)
    ccho_prefix: bool = True  # False: +CCHO answers a bare "1" (Fibocom FM350)
    cgla_prefix: bool = True  # False: +CGLA answers a bare '4,"9000"' (Fibocom FM350)
    no_test_commands: tuple[str, ...] = ()  # commands whose "=?" form answers ERROR
    # "hex_chars" (TS 27.007) | "bytes" (length field in bytes: wrong)
    length_field: Literal["hex_chars", "bytes"] = "hex_chars"
    max_line: int = 1024  # longest information line seen from this family, in characters
    command_timeout_s: float = 10.0
    init: tuple[str, ...] = ()  # commands sent after opening the port, in order
    shutdown: tuple[str, ...] = ()  # commands sent before closing it
    forbidden: tuple[str, ...] = ()  # commands the driver refuses to send (they reboot the modem)
    urcs: tuple[str, ...] = ()  # vendor URC prefixes routed to the URC callback (e.g. "#QSS")
    note: str = ""


@dataclass(frozen=True)
class PinQuery:
    """How this family reports the PIN1 tries left (kind = "at"); TS 27.007 has AT+CPINR (8.65),
    many modems answer a vendor command instead. ``retries_answer`` is the answer's layout
    with ``{pin}``/``{puk}`` (the simulator replays it); the driver reads field
    ``retries_index`` (0 = the first after the prefix) of the line starting ``retries_prefix``."""

    retries_command: str = ""
    retries_prefix: str = ""
    retries_index: int = 0
    retries_answer: str = ""
    note: str = ""


@dataclass(frozen=True)
class Match:
    """How a modem is recognised (auto-detection when the config names no profile).

    ``manufacturer`` / ``model``: regular expressions searched, case-insensitively, in the
    answers to AT+CGMI / AT+CGMM (and in ATI's lines). A family matches when a manufacturer
    pattern and a model pattern both match, or when the port's USB/PCI id is one of
    ``[port] usb_ids`` / ``pci_ids``. ``cgmi`` / ``cgmm`` / ``ati``: what the family answers
    (recorded examples); the lab simulator replays them."""

    manufacturer: tuple[str, ...] = ()
    model: tuple[str, ...] = ()
    cgmi: str = ""
    cgmm: str = ""
    ati: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class ImsReporting:
    commands: tuple[str, ...] = ()  # e.g. AT+CIREP=1, AT+CIREG=2
    urcs: tuple[str, ...] = STANDARD_URCS


@dataclass(frozen=True)
class Profile:
    name: str
    kind: Literal["at", "pcsc", "lab"]
    summary: str
    vendor: str = ""
    models: tuple[str, ...] = ()
    card: CardAccess = field(default_factory=lambda: CardAccess(access="csim"))
    port: PortHint | None = None
    reader: ReaderHint | None = None
    at: AtDialect | None = None
    ims: ImsReporting | None = None
    pin: PinQuery | None = None
    match: Match | None = None
    source: Annotated[str, INTERNAL] = ""

    @property
    def access(self) -> str:
        return self.card.access

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- validation ---------------------------------------------------------------------------------------

_SECTIONS_BY_KIND = {
    "at": {"port", "card", "at", "ims", "pin", "match"},
    "pcsc": {"reader", "card"},
    "lab": {"card"},
}
_ALL_SECTIONS = {"port", "reader", "card", "at", "ims", "pin", "match"}


def parse_profile(data: dict[str, Any], where: str = "<profile>") -> Profile:
    """Validate one profile table (as read from TOML) into a :class:`Profile`."""
    try:
        profile = convert(Profile, data)
    except ConvertError as exc:
        raise config_error(exc, where) from None
    if "card" not in data:  # the dataclass default is for programs; a file says how the card is reached
        raise ConfigError("config.missing_key", f"{where}: missing key 'card'", key="card")
    kind = profile.kind
    for name in sorted(_ALL_SECTIONS - _SECTIONS_BY_KIND[kind]):
        if name in data:
            raise ConfigError(
                "config.unknown_key", f"{where}: [{name}] does not apply to kind '{kind}'", key=name
            )
    card = profile.card
    if card.access not in ACCESS[kind]:
        raise ConfigError(
            "config.invalid",
            f"{where}: card.access must be one of {', '.join(ACCESS[kind])} for kind '{kind}'",
            key="card.access",
        )
    if card.access == "cgla" and not card.ccho:
        raise ConfigError(
            "config.invalid", f"{where}: card.access = cgla needs card.ccho = true", key="card.ccho"
        )
    defaults: dict[str, Any] = {"source": where}
    if kind == "at":
        defaults.update(
            at=profile.at or AtDialect(),
            ims=profile.ims or ImsReporting(),
            port=profile.port or PortHint(),
            pin=profile.pin or PinQuery(),
            match=profile.match or Match(),
        )
        _check_match(defaults["match"], defaults["port"], where)
    return replace(profile, **defaults)


_ID = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{4}$")


def _check_match(match: Match, port: PortHint, where: str) -> None:
    for key, patterns in (("match.manufacturer", match.manufacturer), ("match.model", match.model)):
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError("config.invalid", f"{where}: {key}: bad pattern ({exc})", key=key) from None
    for key, ids in (("port.usb_ids", port.usb_ids), ("port.pci_ids", port.pci_ids)):
        for value in ids:
            if not _ID.match(value):
                raise ConfigError("config.invalid", f"{where}: {key}: 'vvvv:pppp' in lower-case hex", key=key)


def load_profile_file(path: str | Path | Traversable) -> Profile:
    """Load one profile file: a path, or a Traversable from the package data."""
    if isinstance(path, str):
        path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config.unreadable", f"{path}: {exc.strerror}", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config.invalid", f"{path}: not TOML: {exc}", path=str(path)) from None
    profile = parse_profile(data, str(path))
    if profile.name + ".toml" != path.name:
        raise ConfigError(
            "config.invalid", f"{path}: name '{profile.name}' must match the file name", key="name"
        )
    return profile


# --- search path ----------------------------------------------------------------------------------------


def search_path() -> list[Traversable]:
    """The profile directories, first hit wins.

    The installed package data is a :class:`~importlib.resources.abc.Traversable`, not
    necessarily a filesystem path: ``ue_agent.hw_profiles`` has no ``__init__.py``, so an
    installed wheel gives a ``MultiplexedPath`` (whose ``str()`` is not a path), and a
    zipped install would give a ``zipfile.Path``. Only the Traversable API is used on it.
    """
    dirs: list[Traversable] = [Path(p) for p in os.environ.get("UE_AGENT_PROFILES", "").split(":") if p]
    dirs.append(ETC_DIR)
    try:
        dirs.append(resources.files("ue_agent.hw_profiles"))
    except ModuleNotFoundError:
        pass
    dirs.append(SOURCE_DIR)
    out: list[Traversable] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def _profile_files() -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    for d in search_path():
        try:
            if not d.is_dir():
                continue
            entries = sorted(d.iterdir(), key=lambda t: t.name)
        except PermissionError:
            # /etc/ue-agent is 0750 root:ue-agent on a packaged install: other users
            # (`ue-agent profiles` as a developer) see the shipped profiles only
            continue
        for f in entries:
            if f.name.endswith(".toml") and f.is_file():
                found.setdefault(f.name[: -len(".toml")], f)
    return found


def available() -> list[str]:
    return sorted(_profile_files())


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (a file stem), or a path to a profile file."""
    if "/" in name or name.endswith(".toml"):
        return load_profile_file(name)
    files = _profile_files()
    if name not in files:
        raise ConfigError(
            "config.unknown_profile",
            f"no hardware profile '{name}' (known: {', '.join(sorted(files))})",
            profile=name,
        )
    return load_profile_file(files[name])


def load_all() -> list[Profile]:
    return [load_profile_file(p) for _, p in sorted(_profile_files().items())]


def resolve(profile: Profile | str | None, default: str | None = None) -> Profile | None:
    """Accept a Profile, a name or None (then ``default`` by name, if given)."""
    if isinstance(profile, Profile):
        return profile
    if profile is None:
        return get_profile(default) if default else None
    return get_profile(profile)


# --- auto-detection -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModemIdentity:
    """What a modem says about itself (AT+CGMI, AT+CGMM, AT+CGMR, ATI) and the bus id of its port."""

    manufacturer: str = ""
    model: str = ""
    revision: str = ""
    ati: tuple[str, ...] = ()
    usb_id: str | None = None  # "vvvv:pppp" of the USB device the port belongs to
    pci_id: str | None = None  # "vvvv:dddd" of a PCIe modem (/dev/wwan*)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """The profile chosen for a modem, and why."""

    profile: Profile
    reason: str
    matched: tuple[str, ...] = ()  # every family whose rules matched (more than one: ambiguous)


def _ati_texts(lines: tuple[str, ...]) -> list[str]:
    """ATI's lines, and for "Label: value" lines (Sierra, SIMCom) the value too."""
    out: list[str] = []
    for line in lines:
        out.append(line)
        if ":" in line:
            out.append(line.split(":", 1)[1].strip())
    return out


def _hits(patterns: tuple[str, ...], texts: list[str]) -> bool:
    return any(re.search(p, t, re.IGNORECASE) for p in patterns for t in texts if t)


def match_profile(identity: ModemIdentity, profiles: list[Profile] | None = None) -> Detection:
    """The AT profile whose ``[match]`` rules fit ``identity``; generic-at when none or several do.

    A family fits when a manufacturer pattern and a model pattern both match (the answers
    to AT+CGMI / AT+CGMM, or ATI's lines), or when the port's USB/PCI id is one of the
    family's. Both ways agreeing ranks above one; a tie between families is ambiguous.
    """
    profiles = [p for p in (profiles if profiles is not None else load_all()) if p.kind == "at"]
    scored: list[tuple[int, Profile, str]] = []
    for p in profiles:
        m, port = p.match, p.port
        if m is None or port is None:
            continue
        by_id = (identity.usb_id is not None and identity.usb_id in port.usb_ids) or (
            identity.pci_id is not None and identity.pci_id in port.pci_ids
        )
        ati = _ati_texts(identity.ati)
        man = bool(m.manufacturer) and _hits(m.manufacturer, [identity.manufacturer, *ati])
        model = bool(m.model) and _hits(m.model, [identity.model, *ati])
        score = (2 if man and model else 0) + (1 if by_id else 0)
        if score:
            why = " and ".join(
                x
                for x, hit in (
                    ("AT+CGMI/AT+CGMM", man and model),
                    ("bus id " + str(identity.usb_id or identity.pci_id), by_id),
                )
                if hit
            )
            scored.append((score, p, why))
    fallback = next((p for p in profiles if p.name == "generic-at"), None) or get_profile("generic-at")
    said = " ".join(x for x in (identity.manufacturer, identity.model) if x) or "no identity"
    if not scored:
        return Detection(fallback, f"no profile matches '{said}': generic-at")
    best = max(s for s, _, _ in scored)
    top = [(p, why) for s, p, why in scored if s == best]
    names = tuple(p.name for _, p, _ in scored)
    if len(top) > 1:
        return Detection(
            fallback, f"'{said}' matches {', '.join(p.name for p, _ in top)}: ambiguous, generic-at", names
        )
    profile, why = top[0]
    return Detection(profile, f"'{said}' matches {profile.name} ({why})", names)


def main(args: argparse.Namespace) -> int:
    """``ue-agent profiles [--json]``."""
    profiles = load_all()
    if getattr(args, "json", False):
        rows = [
            {
                "name": p.name,
                "kind": p.kind,
                "card_access": p.access,
                "summary": p.summary,
                "source": p.source,
            }
            for p in profiles
        ]
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(p.name) for p in profiles), default=4)
    print(f"{'NAME':<{width}}  KIND  ACCESS  SUMMARY")
    for p in profiles:
        print(f"{p.name:<{width}}  {p.kind:<4}  {p.access:<6}  {p.summary}")
    return 0
