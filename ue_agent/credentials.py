"""Secrets from credential files, never from the main config (systemd LoadCredential=).

``[card] pin_credential = "ue-agent.pin"`` names a credential. A bare name is looked up in
``$CREDENTIALS_DIRECTORY``, the directory systemd fills from ``LoadCredential=`` /
``LoadCredentialEncrypted=`` (systemd.exec(5), "Credentials"); an absolute path is read as
is (a dev board without systemd, ``ue-agent doctor`` run by hand). The file holds the PIN's
4-8 digits and an optional trailing newline. The value is a :class:`Secret`: it is not in
any message, log or repr, also when the file is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path

from ue_agent.errors import ConfigError
from ue_agent.secret import Secret

ENV = "CREDENTIALS_DIRECTORY"


def credential_path(name: str) -> Path:
    """Where the credential ``name`` is read from; ConfigError when it cannot be located."""
    if name.startswith("/"):
        return Path(name)
    if "/" in name or name in ("", ".", ".."):
        raise ConfigError(
            "config.invalid",
            "card.pin_credential: a credential name or an absolute path",
            key="card.pin_credential",
        )
    directory = os.environ.get(ENV)
    if not directory:
        raise ConfigError(
            "config.credential_missing",
            f"credential '{name}': ${ENV} is not set (run under systemd with LoadCredential={name}:..., "
            "or give an absolute path)",
            key="card.pin_credential",
        )
    return Path(directory) / name


def read_pin(name: str) -> Secret:
    """The PIN in credential ``name`` (4-8 digits). ConfigError ``config.credential_missing``
    when the file is absent or unreadable, ``config.invalid`` when it is not a PIN."""
    path = credential_path(name)
    try:
        raw = bytearray(path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            "config.credential_missing",
            f"credential '{name}' cannot be read ({exc.strerror})",
            key="card.pin_credential",
            path=str(path),
        ) from None
    try:
        while raw[-1:] in (b"\n", b"\r"):
            del raw[-1:]
        if not (4 <= len(raw) <= 8 and bytes(raw).isdigit()):
            raise ConfigError(
                "config.invalid",
                f"credential '{name}' does not hold a PIN (4 to 8 digits)",
                key="card.pin_credential",
                path=str(path),
            )
        return Secret(raw, "PIN1")
    finally:
        raw[:] = b"\x00" * len(raw)
