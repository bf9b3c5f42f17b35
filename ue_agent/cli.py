"""The ``ue-agent`` command. Each subcommand imports its module only when it runs,
so ``ue-agent status`` does not pay for pyscard or pyroute2, and the device commands never
import the lab (``ue_agent.lab``) or its extra's libraries."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from ue_agent import __version__
from ue_agent.errors import AgentError

DEFAULT_CONFIG = "/etc/ue-agent/config.toml"
DEFAULT_SOCKET = "/run/ue-agent/api.sock"
#: the modules of the ``[lab]`` extra (pyproject.toml); ``lab`` and ``demo`` need them
LAB_MODULES = ("aiohttp", "pylibsrtp")


def _handler(target: str):
    """'module:function' resolved at call time."""

    def run(args: argparse.Namespace) -> int:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(args) or 0

    return run


def _lab_handler(target: str, command: str):
    """Like :func:`_handler`, for the commands of the ``[lab]`` extra: when its libraries are
    not installed (a device install has only the base dependencies), say which extra to
    install instead of failing on an import deep inside the lab."""
    inner = _handler(target)

    def run(args: argparse.Namespace) -> int:
        missing = [m for m in LAB_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise AgentError(
                "cli.extra_missing",
                f"'ue-agent {command}' needs the lab extra, which is not installed"
                f" (missing: {', '.join(missing)}): pip install 'ue-agent[lab]'."
                " Device installs (the .deb, a base wheel install) do not ship the lab.",
                extra="lab",
                missing=missing,
            )
        return inner(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ue-agent", description="IMS security agent: ISIM/AKA, GBA, KMS and media keys"
    )
    p.add_argument("--version", action="version", version=f"ue-agent {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="the daemon, in the foreground, as systemd runs it")
    run.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config (default %(default)s)")
    run.set_defaults(func=_handler("ue_agent.daemon:main"))

    demo = sub.add_parser("demo", help="run the scenarios end to end on the embedded lab")
    demo.add_argument("--keep-dir", help="keep the lab's files (configs, logs) in this directory")
    demo.add_argument("--only", action="append", metavar="SCENARIO", help="run only these scenarios")
    demo.add_argument("--no-pcsc", action="store_true", help="keep UE-B's card in process (no pcscd)")
    demo.set_defaults(func=_lab_handler("ue_agent.lab.demo:main", "demo"))

    lab = sub.add_parser("lab", help="parts of the embedded lab, one at a time")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="PART")
    net = lab_sub.add_parser("network", help="the lab HSS, BSF and KMS over HTTP on loopback")
    net.add_argument("--subscribers", nargs="+", required=True, metavar="FILE")
    net.add_argument("--bsf", default="127.0.0.1:8080", metavar="HOST:PORT")
    net.add_argument("--kms", default="127.0.0.1:8081", metavar="HOST:PORT")
    net.add_argument(
        "--mailbox", default=None, metavar="HOST:PORT", help="also serve the lab mailbox (deferred delivery)"
    )
    net.add_argument("--focus", metavar="FILE", help="run a conference focus (MRFC/MRFP) as this subscriber")
    net.set_defaults(func=_lab_handler("ue_agent.lab.network:main", "lab network"))
    uicc = lab_sub.add_parser("uicc", help="a soft UICC served to a vpcd virtual reader")
    uicc.add_argument("--subscriber", required=True, metavar="FILE")
    uicc.add_argument("--vpcd", default="127.0.0.1:35963", metavar="HOST:PORT")
    uicc.set_defaults(func=_lab_handler("ue_agent.lab.vpcd:main", "lab uicc"))
    modem = lab_sub.add_parser("modem", help="a modem simulator with a soft UICC on a pty")
    modem.add_argument("--subscriber", required=True, metavar="FILE")
    modem.add_argument("--pty", required=True, metavar="PATH", help="symlink to create for the pty")
    modem.add_argument("--profile", default="generic-at", help="hardware profile whose dialect to speak")
    modem.add_argument("--control", metavar="FIFO", help="a FIFO whose lines are emitted as URCs")
    modem.set_defaults(func=_lab_handler("ue_agent.lab.modem:main", "lab modem"))

    card = sub.add_parser("card", help="the UICC")
    card_sub = card.add_subparsers(dest="card_command", required=True, metavar="ACTION")
    info = card_sub.add_parser("info", help="identities read from the card")
    info.add_argument("--config", default=DEFAULT_CONFIG)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_handler("ue_agent.cardinfo:main"))

    status = sub.add_parser("status", help="the daemon's state")
    status.add_argument("--socket", default=DEFAULT_SOCKET)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_handler("ue_agent.api.status_cmd:main"))

    doctor = sub.add_parser("doctor", help="bring-up report: readers, ports, modem, card, PIN, AKA, network")
    doctor.add_argument("--config", default=DEFAULT_CONFIG, help="TOML config (default %(default)s)")
    doctor.add_argument("--json", action="store_true")
    doctor.set_defaults(func=_handler("ue_agent.doctor:main"))

    profiles = sub.add_parser("profiles", help="the hardware profiles this agent knows")
    profiles.add_argument("--json", action="store_true")
    profiles.set_defaults(func=_handler("ue_agent.profiles:main"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import logging

    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except AgentError as exc:
        print(f"ue-agent: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
