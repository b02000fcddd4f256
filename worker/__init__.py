"""Celery workers of the platform: thin task shells around :mod:`mfpo.jobs` (the stage graph's distributed executor)."""
