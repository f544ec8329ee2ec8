"""The app's schema history (Alembic): ``python -m config.migrate`` applies it.

``env.py`` is Alembic's entry point, ``versions/`` holds one file per revision and
``privileges.py`` the grants every revision ends with (docs/app/migrations.md).
"""
