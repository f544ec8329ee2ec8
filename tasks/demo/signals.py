"""The demo's observers wired to Celery signals. None of them can veto anything."""
from __future__ import annotations

from celery.signals import worker_process_init

from tasks.demo.db import reset_engine


@worker_process_init.connect
def fresh_engine(**_):
    """A forked pool child must not share its parent's database connections."""
    reset_engine()
