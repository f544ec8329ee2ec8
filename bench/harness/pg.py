"""Throwaway PostgreSQL databases on the shared server (127.0.0.1:5432, trust auth):
created for one benchmark run, dropped at its end."""
from __future__ import annotations

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_url(db: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}"


def create_db(name: str) -> str:
    """A fresh, empty database ``name`` (dropped first if a crashed run left it); its URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return pg_url(name)


def drop_db(name: str) -> str | None:
    """Drop ``name``; what went wrong, in words, or None (a failed drop must not hide the
    run's result)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return f"could not drop database {name}: {exc}"
    return None
