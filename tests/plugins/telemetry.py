"""Fixtures for telemetry tests."""
