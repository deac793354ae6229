"""Shared pytest fixtures. Fixture modules live beside this file as ``_*_fixtures.py``
and are re-exported here, one import line each."""
