"""ue-agent: the security agent of a Linux IMS handset, modem or dev board."""

__version__ = "0.1.0"
