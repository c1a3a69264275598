"""Pytest plugins (fixtures) per external system, registered in conftest.py."""
