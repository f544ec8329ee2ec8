"""Alembic's entry point: runs the revisions of versions/ on the connection that
config/migrate.py hands over (``config.attributes["connection"]``), or on a connection to
``sqlalchemy.url`` when Alembic's own command line runs it."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from tasks.demo.models import metadata


def run_on(connection) -> None:
    # Batch mode makes later ALTERs work on SQLite too (it copies the table).
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        raise SystemExit("Floodgate's migrations run against a database (python -m "
                         "config.migrate), not as an SQL script (--sql).")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url"),
                           poolclass=pool.NullPool)
    with engine.connect() as connection:
        run_on(connection)


run()
