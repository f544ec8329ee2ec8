#!/bin/sh
# Makes the secrets docker-compose.yml mounts: one file per secret in deploy/secrets/
# (or $SECRETS_DIR), which git ignores. Run it once before the first `docker compose up`.
#
#   deploy/make-secrets.sh                      # create every missing secret, keep the rest
#   deploy/make-secrets.sh --rotate redis ...   # new values for these groups (docs/app/deploy.md)
#
# Groups: postgres-superuser postgres-owner postgres-app rabbitmq rabbitmq-admin redis
#         flower api-key-secret ops-token grafana
#
# Values are random hex (URL-, JSON- and shell-safe). The *_url files are derived from the
# password files on every run, so a URL always holds the current password. The directory
# is 0700, so no other host user can read it; the files are 0644 because Docker bind-mounts
# them with their host mode and the services read them as their own non-root users.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dir=${SECRETS_DIR:-$here/secrets}

random_hex() {  # $1 bytes from the kernel's CSPRNG, as hex
  od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
}

write() {  # name value: replace the file atomically, mode 0644 (see above)
  umask 022
  printf '%s' "$2" > "$dir/.$1.new"
  mv -f "$dir/.$1.new" "$dir/$1"
}

ensure() {  # name bytes: a random value, only when the file is missing
  [ -s "$dir/$1" ] || write "$1" "$(random_hex "$2")"
}

read_secret() {
  cat "$dir/$1"
}

files_of() {  # the password files a group owns
  case "$1" in
    postgres-superuser) echo postgres_password ;;
    postgres-owner) echo postgres_owner_password ;;
    postgres-app) echo postgres_app_password ;;
    rabbitmq) echo rabbitmq_password ;;
    rabbitmq-admin) echo rabbitmq_admin_password ;;
    redis) echo redis_password ;;
    flower) echo flower_password ;;
    api-key-secret) echo api_key_secret ;;
    ops-token) echo ops_token ;;
    grafana) echo grafana_admin_password ;;
    *) echo "make-secrets: unknown group '$1' (see the list at the top of $0)" >&2; return 1 ;;
  esac
}

umask 077
mkdir -p "$dir"
chmod 700 "$dir"

if [ "${1:-}" = "--rotate" ]; then
  shift
  [ $# -gt 0 ] || { echo "make-secrets: --rotate needs at least one group" >&2; exit 2; }
  for group in "$@"; do
    names=$(files_of "$group") || exit 2
    for name in $names; do rm -f "$dir/$name"; done
  done
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--rotate GROUP...]" >&2
  exit 2
fi

ensure postgres_password 24
ensure postgres_owner_password 24
ensure postgres_app_password 24
ensure rabbitmq_password 24
ensure rabbitmq_admin_password 24
ensure redis_password 24
ensure flower_password 16
ensure api_key_secret 32
ensure ops_token 32
ensure grafana_admin_password 16

# What the applications read: URLs holding the passwords above (hostnames are the
# compose services; the roles, users and vhost are the ones deploy/ creates).
write database_url "postgresql+psycopg://floodgate_app:$(read_secret postgres_app_password)@postgres:5432/floodgate"
write migration_database_url "postgresql+psycopg://floodgate_owner:$(read_secret postgres_owner_password)@postgres:5432/floodgate"
write broker_url "amqp://floodgate:$(read_secret rabbitmq_password)@rabbitmq:5672/floodgate"
write redis_url "redis://floodgate:$(read_secret redis_password)@redis:6379/0"
write flower_basic_auth "floodgate:$(read_secret flower_password)"

echo "secrets in $dir:"
ls -1 "$dir"
