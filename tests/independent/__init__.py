"""Implementations written independently of ue_agent, from primary texts only, for interoperability tests."""
