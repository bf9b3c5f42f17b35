"""`python -m ue_agent` is the `ue-agent` command."""

from ue_agent.cli import main

raise SystemExit(main())
