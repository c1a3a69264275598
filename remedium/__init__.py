"""Remedium: durable incident auto-remediation on Temporal."""

__version__ = "0.1.0"
