"""Fixtures for kubernetes tests."""
