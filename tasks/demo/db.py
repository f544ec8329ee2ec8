"""Database engines, the schema check and the one dialect-specific helper (insert-or-ignore).

Two engines on one database: :func:`engine` (blocking: workers, beat, the API's reads and
its threaded submit path) and :func:`async_engine` (asyncio: the API's async submit path,
``API_SUBMIT_PATH=async``), whose URL is DATABASE_URL's with an asyncio driver (asyncpg
for PostgreSQL, aiosqlite for SQLite).

The schema is made and changed by migrations (``python -m config.migrate``), never here:
the app's own role may read and write rows but not create tables.
"""
from __future__ import annotations

import asyncio
import functools
import weakref

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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


#: The asyncio driver for each database: DATABASE_URL names the blocking one.
ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
_async_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
    weakref.WeakKeyDictionary())


def async_url(url: str) -> str:
    """DATABASE_URL with its database's asyncio driver (postgresql+psycopg:// ->
    postgresql+asyncpg://, sqlite:/// -> sqlite+aiosqlite:///)."""
    parsed = make_url(url)
    driver = ASYNC_DRIVERS.get(parsed.get_backend_name())
    if driver is None:
        raise ValueError(f"no asyncio driver for {parsed.get_backend_name()!r} databases; "
                         "use PostgreSQL or SQLite, or API_SUBMIT_PATH=threads")
    query = dict(parsed.query)
    if driver.endswith("asyncpg") and "sslmode" in query:  # libpq's word; asyncpg says ssl
        query["ssl"] = query.pop("sslmode")
    return parsed.set(drivername=driver, query=query).render_as_string(hide_password=False)


def async_engine() -> AsyncEngine:
    """The running event loop's asyncio engine, made on first use: a connection of
    asyncpg belongs to the loop that opened it, so each loop (one per API process; one per
    TestClient in tests) has its own pool. Closed by :func:`close_async_engine`."""
    loop = asyncio.get_running_loop()
    eng = _async_engines.get(loop)
    if eng is None:
        eng = _async_engines[loop] = _make_async_engine()
    return eng


def _make_async_engine() -> AsyncEngine:
    settings = get_settings()
    url = async_url(settings.database)
    if url.startswith("sqlite"):
        eng = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(eng.sync_engine, "connect", _sqlite_pragmas)
        return eng
    return create_async_engine(url, pool_pre_ping=True, pool_size=settings.api_db_pool_size,
                               max_overflow=settings.api_db_pool_overflow)


async def close_async_engine() -> None:
    """Close the running loop's asyncio engine and its connections (the API's shutdown)."""
    eng = _async_engines.pop(asyncio.get_running_loop(), None)
    if eng is not None:
        await eng.dispose()


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
