"""``python -m config.migrate``: bring the app's database to the newest schema (Alembic).

Connects as MIGRATION_DATABASE_URL, the role that owns the tables (DATABASE_URL when
unset); with ``APP_DB_ROLE`` set, every revision grants that role the rows of the tables
and nothing more (tasks/demo/migrations/privileges.py). A database made before
migrations (tables from ``metadata.create_all``, no ``alembic_version``) is adopted:
stamped at the last revision whose tables it already holds, then upgraded.
``--check`` changes nothing and exits 1 unless the database is at the newest revision.
The revisions live in tasks/demo/migrations/versions; docs/app/migrations.md.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, pool, text

from config.secrets import masked_url
from tasks.demo.migrations.privileges import grant

MIGRATIONS = ("tasks.demo", "migrations")  # the package and its folder of Alembic scripts
# Two migrations at once (two deploys, two containers) wait for each other on PostgreSQL.
PG_LOCK_KEY = 0x466C6F6F64  # any constant the app's other locks do not use: "Flood"
RUN = "run `python -m config.migrate`"
#: The revisions of the schema ``metadata.create_all`` made before migrations: a database
#: without alembic_version is adopted at one of them (each lists the tables it ``creates``).
ADOPTABLE = ("0001_initial", "0002_api_keys")


@dataclass(frozen=True)
class Migrated:
    """What :func:`upgrade` did: ``before`` is None for an empty database."""

    before: str | None
    after: str
    adopted: str | None = None  # the revision a database made before migrations got
    granted: str | None = None  # APP_DB_ROLE, granted its rows

    def sentence(self) -> str:
        head = f"{self.after} (head)"
        if self.adopted:
            done = (f"adopted its tables made before migrations at {self.adopted}, "
                    + ("and it is at " if self.adopted == self.after else "upgraded to ") + head)
        elif self.before == self.after:
            done = f"already at {head}"
        else:
            done = f"upgraded from {self.before or 'an empty schema'} to {head}"
        return done + (f"; role {self.granted} may read and write rows, nothing more"
                       if self.granted else "")


def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration, built in code (no alembic.ini)."""
    cfg = Config()
    package, folder = MIGRATIONS
    cfg.set_main_option("script_location", str(resources.files(package) / folder))
    cfg.set_main_option("file_template", "%%(rev)s")  # versions/0003_what.py
    if url:
        # Alembic's options are configparser values, where '%' starts an interpolation.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return scripts().get_current_head()


def current_revision(conn) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def behind(current: str | None, head: str) -> str | None:
    """The sentence saying the schema is not the code's, or None when it is."""
    if current == head:
        return None
    return f"the database is at revision {current or 'none'}, the code needs {head}: {RUN}"


def upgrade(url: str) -> Migrated:
    """Bring the database at ``url`` to the newest revision, in one transaction."""
    cfg = alembic_config(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
            cfg.attributes["connection"] = conn  # env.py runs on this connection
            before = current_revision(conn)
            adopted = adopt(conn, cfg) if before is None else None
            command.upgrade(cfg, "head")
            granted = grant(conn)  # also when no revision ran: a role made since then
            return Migrated(before, current_revision(conn), adopted, granted)
    finally:
        engine.dispose()


def adopt(conn, cfg: Config) -> str | None:
    """Stamp a database made by ``create_all`` (tables, no ``alembic_version``) at the
    last adoptable revision whose tables it holds; None for an empty database."""
    present = set(inspect(conn).get_table_names())
    script_dir = ScriptDirectory.from_config(cfg)
    creates = {rev: set(script_dir.get_revision(rev).module.creates) for rev in ADOPTABLE}
    adopted = None
    for rev in ADOPTABLE:
        if not creates[rev] <= present:
            break
        adopted = rev
        present -= creates[rev]
    stray = sorted(present & set().union(*creates.values()))
    if stray:
        raise SystemExit(
            f"Floodgate migration error: the database holds the tables {stray} but no "
            "alembic_version, nor every other table of the revision that creates them, so it "
            "matches no revision (changed by hand?). Drop them, or stamp the matching revision "
            "yourself (docs/app/migrations.md).")
    if adopted:
        command.stamp(cfg, adopted)
    return adopted


def check(url: str) -> str | None:
    """The sentence saying the schema at ``url`` is not at head, or None when it is."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return behind(current_revision(conn), head_revision())
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    from config.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m config.migrate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 unless the database is at head")
    args = parser.parse_args(argv)
    url = get_settings().migration_database
    if args.check:
        problem = check(url)
        print(f"database {masked_url(url)}: {problem or f'at {head_revision()} (head)'}")
        sys.exit(1 if problem else 0)
    print(f"database {masked_url(url)}: {upgrade(url).sentence()}")


if __name__ == "__main__":
    main()
