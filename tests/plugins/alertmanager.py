"""Fixtures for alertmanager tests."""
