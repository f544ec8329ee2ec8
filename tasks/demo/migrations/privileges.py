"""Least privilege on PostgreSQL: the app's role reads and writes rows, and nothing more.

Migrations run as the role that owns the tables (MIGRATION_DATABASE_URL). With
``APP_DB_ROLE`` set, every revision ends by granting that role exactly:

- SELECT, INSERT, UPDATE, DELETE on every table of the schema but ``alembic_version``;
- SELECT on ``alembic_version`` (the API checks the schema's revision at startup);
- USAGE, SELECT on the schema's sequences (``users.id``, ``posts.id``);
- USAGE on the schema itself, without which no table in it can be reached.

So the app's role can create no table, alter or drop none, and cannot move the schema's
revision. Whatever else it held on these tables and sequences (TRUNCATE, REFERENCES,
TRIGGER, UPDATE on the version table) is revoked first, so granting again is idempotent
and leaves exactly this list. The role must exist, must not be the migrating role and must
not be a superuser, whom no grant limits.
"""
from __future__ import annotations

import os

from alembic import op
from sqlalchemy import inspect, text

APP_ROLE_VARIABLE = "APP_DB_ROLE"
VERSION_TABLE = "alembic_version"


def grant_app_role() -> None:
    """Called last by every revision's upgrade."""
    grant(op.get_bind())


def grant(conn) -> str | None:
    """Grant ``$APP_DB_ROLE`` the rows of every table now in the schema; the role, or None
    when there is nothing to do (unset, or not PostgreSQL). ``python -m config.migrate``
    also calls it after the last revision, so a role made after them gets its rows too."""
    role = os.environ.get(APP_ROLE_VARIABLE)
    if not role or conn.dialect.name != "postgresql":
        return None
    _require_role(conn, role)
    quote = conn.dialect.identifier_preparer.quote
    grantee, schema = quote(role), quote(conn.execute(text("SELECT current_schema()")).scalar())
    tables = [quote(t) for t in inspect(conn).get_table_names() if t != VERSION_TABLE]
    # Alembic creates its version table before it runs the first revision.
    everything = ", ".join([*tables, quote(VERSION_TABLE)])
    statements = [
        f"REVOKE ALL ON {everything} FROM {grantee}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {grantee}",
        f"GRANT USAGE ON SCHEMA {schema} TO {grantee}",
        f"GRANT SELECT ON {quote(VERSION_TABLE)} TO {grantee}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {grantee}",
    ]
    if tables:
        statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(tables)} "
                          f"TO {grantee}")
    for statement in statements:
        conn.execute(text(statement))
    return role


def _require_role(conn, role: str) -> None:
    found = conn.execute(text("SELECT rolsuper, rolname = current_user AS migrating "
                              "FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
    if found is None:
        problem = "does not exist; create it first (CREATE ROLE ... LOGIN PASSWORD '...')"
    elif found.rolsuper:
        problem = "is a superuser, whom no grant limits; use a role without SUPERUSER"
    elif found.migrating:
        problem = "is the role running the migrations (the tables' owner); name the app's own"
    else:
        return
    raise SystemExit(f"Floodgate migration error: {APP_ROLE_VARIABLE} names the role {role!r}, "
                     f"which {problem} (or unset {APP_ROLE_VARIABLE} to grant nothing).")
