"""Sandbox servers faithful to the APIs we integrate with: the demo and the tests run on them."""
