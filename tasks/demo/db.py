"""Database engine, the schema check and the one dialect-specific helper (insert-or-ignore).

The schema is made and changed by migrations (``python -m config.migrate``), never here:
the app's own role may read and write rows but not create tables.
"""
from __future__ import annotations

import functools

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from config.settings import ConfigError, get_settings


@functools.cache
def engine() -> Engine:
    url = get_settings().database
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(eng, "connect", _sqlite_pragmas)
    else:
        eng = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    return eng


def check_schema(eng: Engine) -> str:
    """The schema's revision when it is the code's; ConfigError (a SystemExit) naming both
    revisions and ``python -m config.migrate`` otherwise. Connects, so an unreachable
    database fails here too."""
    from config.migrate import behind, current_revision, head_revision

    with eng.connect() as conn:
        current = current_revision(conn)
    problem = behind(current, head_revision())
    if problem:
        raise ConfigError(f"Floodgate configuration error: {problem}.")
    return current


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets the API read while a worker writes; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def insert_ignore(conn, table):
    """INSERT ... ON CONFLICT DO NOTHING for SQLite and PostgreSQL."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def reset_engine() -> None:
    """Forget the engine (after fork, or when tests change DATABASE_URL)."""
    if engine.cache_info().currsize:
        engine().dispose(close=False)
    engine.cache_clear()
