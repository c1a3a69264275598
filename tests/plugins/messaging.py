"""Fixtures for messaging tests."""
