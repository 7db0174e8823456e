"""Enrichment of one event hour (pure rules in :mod:`.rules`, reusable by the Spark job)."""
