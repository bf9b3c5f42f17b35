"""The logical channels the agent holds open on the card, kept in a small file.

A UICC has few logical channels (TS 102 221 11.1.17: up to 19 besides the basic one; the
ATR says how many, often 3). A channel stays open until MANAGE CHANNEL close or a card
reset, so an agent killed with SIGKILL (or by the OOM killer, restarted by systemd) leaves
its ISIM channel open, and after a few restarts MANAGE CHANNEL open fails. The agent
therefore notes each channel it opens here (``"mc:<n>"``: MANAGE CHANNEL, ``"ccho:<id>"``:
AT+CCHO session) and removes it when closed; the next agent closes what is left
(:func:`reclaim`) before it opens its own.

Closing only what was recorded, rather than every channel 1..N that is not ours: other
users of the same UICC (the modem's own IMS stack, STK, another PC/SC client) may hold
channels, and closing theirs would break them. The file is tied to the card path (the
transport's name): entries for another path are not sent to this card.

The file lives in the runtime directory (``$RUNTIME_DIRECTORY`` under systemd, with
``RuntimeDirectoryPreserve=yes`` so it survives restarts; else next to the API socket):
it is cleared at boot, when the card is powered up afresh anyway.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ue_agent.card.session import Card

log = logging.getLogger(__name__)

FILE_NAME = "channels.json"


def default_path(socket_path: str | None) -> Path | None:
    """``$RUNTIME_DIRECTORY/channels.json``, else next to the API socket; None when neither."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime) / FILE_NAME
    if socket_path:
        return Path(socket_path).parent / FILE_NAME
    return None


class ChannelRecordFile:
    """The record for one card path. ``leftovers``: what a predecessor left for this path."""

    def __init__(self, path: str | Path, transport_name: str) -> None:
        self.path = Path(path)
        self.transport_name = transport_name
        self._keys: list[str] = []
        self.leftovers: list[str] = self._load()

    def _load(self) -> list[str]:
        try:
            data: Any = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("channel record %s unreadable (%s): ignored", self.path, type(exc).__name__)
            return []
        if not isinstance(data, dict) or not isinstance(data.get("channels"), list):
            return []
        if data.get("transport") != self.transport_name:
            log.info("channel record %s is for another card path: ignored", self.path)
            return []
        return [k for k in data["channels"] if isinstance(k, str)]

    def add(self, key: str) -> None:
        if key not in self._keys:
            self._keys.append(key)
            self._save()

    def discard(self, key: str) -> None:
        changed = key in self._keys or key in self.leftovers
        self._keys = [k for k in self._keys if k != key]
        self.leftovers = [k for k in self.leftovers if k != key]
        if changed:
            self._save()

    @property
    def keys(self) -> list[str]:
        """Everything not known to be closed: leftovers not yet reclaimed, and ours."""
        return [*self.leftovers, *(k for k in self._keys if k not in self.leftovers)]

    def _save(self) -> None:
        body = json.dumps({"transport": self.transport_name, "pid": os.getpid(), "channels": self.keys})
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("channel record %s not written (%s)", self.path, type(exc).__name__)


def reclaim(card: Card, record: ChannelRecordFile) -> int:
    """Close the channels a predecessor left open on this card (see the module text), then
    note ours from now on. Returns how many were dealt with. Failures are logged: the
    agent still starts (a full card then says so with its own error)."""
    from ue_agent.errors import CardError

    left = list(record.leftovers)
    done: list[str] = []
    if left:
        try:
            done = card.reclaim(left)
        except CardError as exc:
            log.warning("closing %d leftover channel(s) failed: %s", len(left), exc.code)
        for key in done:
            record.discard(key)
        log.info("closed %d channel(s) a previous agent left open", len(done))
    card.transport.channel_record = record
    return len(done)


def attach(card: Card, socket_path: str | None) -> int:
    """Reclaim and record for ``card`` with the record file at its default place (if any)."""
    path = default_path(socket_path)
    if path is None or not path.parent.is_dir():
        return 0
    return reclaim(card, ChannelRecordFile(path, card.transport.name))
