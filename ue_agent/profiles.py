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
import tomllib
from dataclasses import MISSING, asdict, dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

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
    baudrate: int = 115200
    note: str = ""


@dataclass(frozen=True)
class ReaderHint:
    """PC/SC reader selection (kind = "pcsc")."""

    name_pattern: str = "*"  # fnmatch pattern on the PC/SC reader name
    note: str = ""


@dataclass(frozen=True)
class CardAccess:
    access: str  # "csim" | "cgla" | "pcsc" | "lab"
    csim: bool = True  # AT+CSIM is offered
    ccho: bool = False  # AT+CCHO/+CGLA are offered
    cchc: bool = True  # AT+CCHC is offered (Sierra EM9191 has none)
    modem_handles_61xx: bool = False  # the modem runs GET RESPONSE itself and answers data||9000
    session_id: str = "channel"  # "channel": +CCHO answers the channel number; "opaque": a long handle
    logical_channels: str = "ccho"  # "ccho" | "manage_channel" (via +CSIM) | "none"
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
    length_field: str = "hex_chars"  # "hex_chars" (TS 27.007) | "bytes" (length field in bytes: wrong)
    max_line: int = 1024  # longest information line seen from this family, in characters
    command_timeout_s: float = 10.0
    init: tuple[str, ...] = ()  # commands sent after opening the port, in order
    shutdown: tuple[str, ...] = ()  # commands sent before closing it
    forbidden: tuple[str, ...] = ()  # commands the driver refuses to send (they reboot the modem)
    urcs: tuple[str, ...] = ()  # vendor URC prefixes routed to the URC callback (e.g. "#QSS")
    note: str = ""


@dataclass(frozen=True)
class ImsReporting:
    commands: tuple[str, ...] = ()  # e.g. AT+CIREP=1, AT+CIREG=2
    urcs: tuple[str, ...] = STANDARD_URCS


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    summary: str
    vendor: str = ""
    models: tuple[str, ...] = ()
    card: CardAccess = field(default_factory=lambda: CardAccess(access="csim"))
    port: PortHint | None = None
    reader: ReaderHint | None = None
    at: AtDialect | None = None
    ims: ImsReporting | None = None
    source: str = ""

    @property
    def access(self) -> str:
        return self.card.access

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- validation ---------------------------------------------------------------------------------------

_TOP = {"name", "kind", "summary", "vendor", "models", "port", "reader", "card", "at", "ims"}
_SECTIONS: dict[str, type] = {
    "port": PortHint,
    "reader": ReaderHint,
    "card": CardAccess,
    "at": AtDialect,
    "ims": ImsReporting,
}
_SECTIONS_BY_KIND = {"at": {"port", "card", "at", "ims"}, "pcsc": {"reader", "card"}, "lab": {"card"}}


def _check_type(value: Any, default: Any, key: str, where: str) -> Any:
    """Coerce TOML values to the dataclass field's type (taken from its default)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, tuple):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        want = type(default).__name__ if not isinstance(default, tuple) else "list of strings"
        raise ConfigError("config.invalid", f"{where}: '{key}' must be a {want}", key=key)
    return value


def _section(cls: type, data: Any, section: str, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError("config.invalid", f"{where}: [{section}] must be a table", key=section)
    fields = cls.__dataclass_fields__
    for key in data:
        if key not in fields:
            raise ConfigError(
                "config.unknown_key", f"{where}: unknown key '{section}.{key}'", key=f"{section}.{key}"
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            default = "" if f.default is MISSING else f.default
            kwargs[name] = _check_type(data[name], default, f"{section}.{name}", where)
    try:
        return cls(**kwargs)
    except TypeError:
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is MISSING]
        key = f"{section}.{missing[0]}" if missing else section
        raise ConfigError("config.missing_key", f"{where}: missing key '{key}'", key=key) from None


def parse_profile(data: dict[str, Any], where: str = "<profile>") -> Profile:
    """Validate one profile table (as read from TOML) into a :class:`Profile`."""
    for key in data:
        if key not in _TOP:
            raise ConfigError("config.unknown_key", f"{where}: unknown key '{key}'", key=key)
    for key in ("name", "kind", "summary", "card"):
        if key not in data:
            raise ConfigError("config.missing_key", f"{where}: missing key '{key}'", key=key)
    for key in ("name", "kind", "summary", "vendor"):
        if key in data and not isinstance(data[key], str):
            raise ConfigError("config.invalid", f"{where}: '{key}' must be a string", key=key)
    kind = data["kind"]
    if kind not in KINDS:
        raise ConfigError("config.invalid", f"{where}: kind must be one of {', '.join(KINDS)}", key="kind")
    allowed = _SECTIONS_BY_KIND[kind]
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        if name not in data:
            continue
        if name not in allowed:
            raise ConfigError(
                "config.unknown_key", f"{where}: [{name}] does not apply to kind '{kind}'", key=name
            )
        sections[name] = _section(cls, data[name], name, where)
    card: CardAccess = sections["card"]
    if card.access not in ACCESS[kind]:
        raise ConfigError(
            "config.invalid",
            f"{where}: card.access must be one of {', '.join(ACCESS[kind])} for kind '{kind}'",
            key="card.access",
        )
    if card.session_id not in ("channel", "opaque"):
        raise ConfigError(
            "config.invalid", f"{where}: card.session_id: channel or opaque", key="card.session_id"
        )
    if card.logical_channels not in ("ccho", "manage_channel", "none"):
        raise ConfigError(
            "config.invalid",
            f"{where}: card.logical_channels: ccho, manage_channel or none",
            key="card.logical_channels",
        )
    if card.access == "cgla" and not card.ccho:
        raise ConfigError(
            "config.invalid", f"{where}: card.access = cgla needs card.ccho = true", key="card.ccho"
        )
    if kind == "at":
        sections.setdefault("at", AtDialect())
        sections.setdefault("ims", ImsReporting())
        sections.setdefault("port", PortHint())
        if sections["at"].length_field not in ("hex_chars", "bytes"):
            raise ConfigError(
                "config.invalid", f"{where}: at.length_field: hex_chars or bytes", key="at.length_field"
            )
    models = data.get("models", [])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ConfigError("config.invalid", f"{where}: 'models' must be a list of strings", key="models")
    return Profile(
        name=data["name"],
        kind=kind,
        summary=data["summary"],
        vendor=data.get("vendor", ""),
        models=tuple(models),
        source=where,
        **sections,
    )


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
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir(), key=lambda t: t.name):
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
