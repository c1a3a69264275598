"""Fixtures for browser tests."""
