"""Runbooks: loading with precise errors, sandboxed templates, matching, planning."""
