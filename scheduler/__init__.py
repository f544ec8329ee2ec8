"""Periodic work: beat's schedule lives in config.celeryconfig; the tasks live here.

Beat is meant to run once (one compose service, one replica). Doubled, it is
harmless: every periodic task is keyed and idempotent (see scheduler.tasks).
"""
