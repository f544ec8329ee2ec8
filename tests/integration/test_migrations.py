"""Migrations (python -m config.migrate): the schema they build is the models', a database
made by the old create_all is adopted, the API refuses a schema behind the code, and the
app's PostgreSQL role reads and writes rows but cannot change the schema.

PostgreSQL tests run whatever TEST_DATABASE says, on databases and roles of their own
(``<prefix>_mig_<hex>``), dropped at the end."""
import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.exc import ProgrammingError

from config.migrate import alembic_config, head_revision, upgrade
from config.settings import ConfigError
from tasks.demo.db import check_schema
from tasks.demo.models import metadata
from tests import processes, support

FIRST = "0001_initial"


@pytest.fixture
def pg():
    """Make databases and roles of this test's own on the shared PostgreSQL; drop them all
    at the end. ``pg.database(owner=None)`` -> its name; ``pg.role()`` -> a login role."""
    made = PgScratch()
    yield made
    made.drop()


class PgScratch:
    def __init__(self) -> None:
        self.databases: list[str] = []
        self.roles: list[str] = []

    def _admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(support.PG_ADMIN, autocommit=True) as conn:
            conn.execute(statement)

    def role(self, kind: str = "app") -> str:
        name = f"{support.PREFIX}_{kind}_{uuid.uuid4().hex[:10]}"
        self._admin(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        self.roles.append(name)
        return name

    def database(self, owner: str | None = None) -> str:
        name = f"{support.PREFIX}_mig_{uuid.uuid4().hex[:10]}"
        owned = sql.SQL(" OWNER {}").format(sql.Identifier(owner)) if owner else sql.SQL("")
        self._admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)) + owned)
        self.databases.append(name)
        return name

    @staticmethod
    def url(database: str, role: str = "postgres") -> str:
        return f"postgresql+psycopg://{role}@127.0.0.1:5432/{database}"

    def drop(self) -> None:
        for name in self.databases:
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                        .format(sql.Identifier(name)))
        for name in self.roles:
            self._admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    """The URL of an empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/migrations.db"
    scratch = request.getfixturevalue("pg")
    return scratch.url(scratch.database())


def _engine(url: str):
    return create_engine(url, poolclass=pool.NullPool)


def schema_differences(url: str) -> list:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()


def test_migrations_build_exactly_the_schema_of_the_models(empty_db):
    migrated = upgrade(empty_db)
    assert (migrated.before, migrated.after) == (None, head_revision())
    assert schema_differences(empty_db) == []
    assert upgrade(empty_db).sentence() == f"already at {head_revision()} (head)"


def test_a_database_made_by_create_all_before_migrations_is_adopted_and_keeps_its_rows(empty_db):
    engine = _engine(empty_db)
    before_keys = [t for t in metadata.sorted_tables if t.name != "api_keys"]
    metadata.create_all(engine, tables=before_keys)  # what engine() did until now
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (name, created_at) VALUES ('old', 1.0)"))
    engine.dispose()

    migrated = upgrade(empty_db)
    assert (migrated.adopted, migrated.after) == (FIRST, head_revision())
    assert "adopted" in migrated.sentence()
    assert schema_differences(empty_db) == []
    engine = _engine(empty_db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["old"]
    engine.dispose()


def test_a_database_holding_only_some_tables_of_a_revision_is_refused_with_a_sentence(tmp_path):
    url = f"sqlite:///{tmp_path}/partial.db"
    engine = _engine(url)
    metadata.create_all(engine, tables=[metadata.tables["users"]])
    engine.dispose()
    with pytest.raises(SystemExit, match=r"holds the tables \['users'\] but no alembic_version"):
        upgrade(url)


def test_downgrading_to_base_removes_every_table(tmp_path):
    url = f"sqlite:///{tmp_path}/down.db"
    upgrade(url)
    command.downgrade(alembic_config(url), "base")
    engine = _engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_the_api_refuses_a_schema_behind_the_code_naming_both_revisions_and_the_fix(tmp_path):
    url = f"sqlite:///{tmp_path}/behind.db"
    engine = _engine(url)
    with pytest.raises(ConfigError, match="at revision none, the code needs"):
        check_schema(engine)  # empty: never migrated
    command.upgrade(alembic_config(url), FIRST)
    with pytest.raises(ConfigError) as refused:
        check_schema(engine)
    assert str(refused.value) == (
        f"Floodgate configuration error: the database is at revision {FIRST}, the code needs "
        f"{head_revision()}: run `python -m config.migrate`.")
    upgrade(url)
    assert check_schema(engine) == head_revision()
    engine.dispose()


def _migrate_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MIGRATION_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "config.migrate", *args], cwd=processes.ROOT,
                          env=env, capture_output=True, text=True, timeout=60,
                          check=False)


def test_the_command_upgrades_prints_one_line_and_never_the_password(pg):
    # Trust authentication takes any password: the URL carries one, as in production.
    url = pg.url(pg.database(), role="postgres:not-to-be-printed")
    check = _migrate_cli(url, "--check")
    assert check.returncode == 1, check.stderr
    assert "at revision none, the code needs" in check.stdout
    done = _migrate_cli(url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1, done.stdout
    assert f"upgraded from an empty schema to {head_revision()} (head)" in done.stdout
    assert "postgres:***@" in done.stdout
    again = _migrate_cli(url, "--check")
    assert again.returncode == 0 and f"at {head_revision()} (head)" in again.stdout
    assert "not-to-be-printed" not in check.stdout + done.stdout + again.stdout \
        + check.stderr + done.stderr + again.stderr


def test_the_app_role_reads_and_writes_rows_but_cannot_change_the_schema(pg, monkeypatch):
    owner, app = pg.role("owner"), pg.role("app")
    database = pg.database(owner=owner)
    monkeypatch.setenv("APP_DB_ROLE", app)
    upgrade(pg.url(database, owner))
    upgrade(pg.url(database, owner))  # granting again changes nothing

    engine = _engine(pg.url(database, app))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (name, created_at) VALUES ('u', 1.0)"))
            conn.execute(text("UPDATE users SET created_at = 2.0"))
            assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["u"]
            conn.execute(text("DELETE FROM users"))
        assert check_schema(engine) == head_revision()  # it reads the version table
        for statement in ("CREATE TABLE intruder (id integer)",
                          "DROP TABLE users",
                          "ALTER TABLE users ADD COLUMN admin boolean",
                          "TRUNCATE posts",
                          "UPDATE alembic_version SET version_num = 'x'",
                          "CREATE INDEX ix_mine ON users (created_at)"):
            with pytest.raises(ProgrammingError) as refused, engine.begin() as conn:
                conn.execute(text(statement))
            assert isinstance(refused.value.orig, psycopg.errors.InsufficientPrivilege), statement
    finally:
        engine.dispose()
    rows_only = {(table, p) for table in metadata.tables
                 for p in ("SELECT", "INSERT", "UPDATE", "DELETE")}
    assert _privileges(pg.url(database), app) == rows_only | {("alembic_version", "SELECT")}


def test_a_role_made_after_the_migrations_gets_its_rows_from_the_next_run(pg, monkeypatch):
    owner = pg.role("owner")
    database = pg.database(owner=owner)
    upgrade(pg.url(database, owner))  # no APP_DB_ROLE: nothing granted
    later = pg.role("app")
    monkeypatch.setenv("APP_DB_ROLE", later)
    migrated = upgrade(pg.url(database, owner))
    assert migrated.sentence() == (f"already at {head_revision()} (head); role {later} may "
                                   "read and write rows, nothing more")
    engine = _engine(pg.url(database, later))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM api_keys")).scalar() == 0
    engine.dispose()


def _privileges(url: str, role: str) -> set[tuple[str, str]]:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :r"), {"r": role}).all())
    finally:
        engine.dispose()


@pytest.mark.parametrize("which, says", [
    ("missing", "which does not exist"),
    ("owner", "is the role running the migrations"),
    ("superuser", "is a superuser, whom no grant limits"),
])
def test_app_db_role_naming_a_role_that_grants_cannot_limit_is_refused(pg, monkeypatch,
                                                                       which, says):
    owner = pg.role("owner")
    database = pg.database(owner=owner)
    role = {"missing": f"{support.PREFIX}_nobody", "owner": owner, "superuser": "postgres"}[which]
    monkeypatch.setenv("APP_DB_ROLE", role)
    with pytest.raises(SystemExit, match=says):
        upgrade(pg.url(database, owner))
    engine = _engine(pg.url(database))
    assert inspect(engine).get_table_names() == []  # one transaction: nothing was kept
    engine.dispose()
