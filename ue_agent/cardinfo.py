"""``ue-agent card info``: the identities on the card the config names."""

from __future__ import annotations

import argparse
import json


def render(ids: dict, transport: str) -> str:
    lines = [
        f"transport      {transport}",
        f"application    {ids['application']}" + (f"  (AID {ids['aid']})" if ids.get("aid") else ""),
        f"ICCID          {ids.get('iccid') or '-'}",
        f"IMSI           {ids.get('imsi') or '-'}",
        f"IMPI           {ids['impi']}",
        f"home domain    {ids['domain']}",
    ]
    for i, impu in enumerate(ids["impus"]):
        lines.append(f"{'IMPU' if i == 0 else '':15}{impu}")
    lines.append(f"P-CSCF         {', '.join(ids['pcscf']) or '-'}")
    services = ", ".join(str(s) for s in ids.get("isim_services", [])) or "-"
    lines.append(f"ISIM services  {services}")
    lines.append(f"GBA            {'GBA_U (on the card)' if ids.get('gba_u') else 'GBA_ME'}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ue_agent.card.pin import PinGate
    from ue_agent.card.session import Card
    from ue_agent.config import load_config
    from ue_agent.pin_unlock import unlock
    from ue_agent.transports import open_transport

    cfg = load_config(args.config)
    transport = open_transport(cfg.card)
    try:
        card = Card(transport)
        unlock(card, PinGate(cfg.card.pin_credential, cfg.card.pin_allow_last_try))
        ids = card.identities().to_dict()
    finally:
        transport.close()
    if args.json:
        print(json.dumps({"transport": transport.name, **ids}, indent=2))
    else:
        print(render(ids, transport.name))
    return 0
