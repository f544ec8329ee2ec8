#!/bin/sh
# Run once by the postgres image when it initializes an empty data directory
# (/docker-entrypoint-initdb.d), as the bootstrap superuser, after it has created the
# database "floodgate". Makes the two roles docker-compose.yml uses:
#
#   floodgate_owner  owns the database, so the migrations (the one-shot `migrate` service,
#                    MIGRATION_DATABASE_URL) create the tables as it and own them.
#   floodgate_app    what the API, workers, beat and Flower log in as (DATABASE_URL): it
#                    may connect and use the schema, and the migrations grant it SELECT,
#                    INSERT, UPDATE and DELETE on the tables and USAGE on the sequences.
#                    It owns nothing and can create nothing.
#
# Neither is a superuser or may create databases or roles. psql reads each password from
# its secret file itself, so none is on a command line.
set -eu
secrets=${FLOODGATE_SECRETS_DIR:-/run/secrets}
for name in postgres_owner_password postgres_app_password; do
  if [ ! -s "$secrets/$name" ]; then
    echo "postgres init: $secrets/$name is missing or empty; run deploy/make-secrets.sh" >&2
    exit 1
  fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_file="$secrets/postgres_owner_password" -v app_file="$secrets/postgres_app_password" \
  <<'SQL'
\set owner_password `cat :'owner_file'`
\set app_password `cat :'app_file'`
CREATE ROLE floodgate_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'owner_password';
CREATE ROLE floodgate_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'app_password';
\unset owner_password
\unset app_password
ALTER DATABASE floodgate OWNER TO floodgate_owner;
REVOKE ALL ON DATABASE floodgate FROM PUBLIC;
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE floodgate TO floodgate_app;
\connect floodgate
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO floodgate_app;
SQL
