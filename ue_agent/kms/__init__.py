"""ue-agent."""
