"""``ue-agent status [--socket P] [--json]``: the daemon's state, read over its socket."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ue_agent.api.client import ApiCallError, Client


def render(st: dict[str, Any]) -> str:
    card = st.get("card", {})
    agent = st.get("agent", {})
    lines = [f"ue-agent {agent.get('version', '?')}, up {agent.get('uptime_s', 0)} s"]
    present = "present" if card.get("present") else f"absent ({card.get('error') or 'not opened'})"
    app = f", application {card['application']}" if card.get("application") else ""
    lines.append(f"card:       {card.get('transport', '?')}, {present}{app}")
    pin = card.get("pin")
    if pin and pin.get("state") not in (None, "unknown"):
        left = f", {pin['retries']} tries left" if pin.get("retries") is not None else ""
        lines.append(f"  pin:      {pin['state']}{left}")
    if card.get("impi"):
        lines.append(f"  impi:     {card['impi']}")
    for impu in card.get("impus", []):
        lines.append(f"  impu:     {impu}")
    gba = st.get("bootstrap")
    if gba:
        state = gba.get("state", "?")
        expiry = f", expires {gba['expires']}" if gba.get("expires") else ""
        lines.append(f"bootstrap:  {state}{expiry}" + (f", B-TID {gba['btid']}" if gba.get("btid") else ""))
    kms = st.get("kms")
    if kms:
        lines.append(f"kms:        {kms.get('url') or 'not configured'} ({kms.get('state', '?')})")
    sessions = st.get("sessions")
    if sessions is not None:
        lines.append(f"sessions:   {sessions.get('open', 0)} open" + _counts(sessions.get("by_state", {})))
    ho = st.get("handover", {})
    lines.append(f"handover:   {ho.get('phase', '?')}" + _counts(ho.get("sessions", {})))
    api = st.get("api")
    if api:
        lines.append(f"api:        {api.get('clients', 0)} clients")
    return "\n".join(lines)


def _counts(counts: dict[str, int]) -> str:
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})" if counts else ""


def main(args: argparse.Namespace) -> int:
    try:
        with Client(args.socket, timeout=10) as c:
            c.request("hello", protocols=[1], client="ue-agent status")
            st = c.request("status")
    except ApiCallError as exc:
        print(f"ue-agent: error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except TimeoutError:
        print("ue-agent: error: api.timeout: the agent did not answer", file=sys.stderr)
        return 1
    st = {k: v for k, v in st.items() if k not in ("id", "ok")}
    print(json.dumps(st, indent=2, sort_keys=True) if args.json else render(st))
    return 0
