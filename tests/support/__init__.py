"""Helpers shared by tests (real servers started as subprocesses)."""
