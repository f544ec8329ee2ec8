#!/bin/sh
# RabbitMQ's entrypoint in docker-compose.yml: fill definitions.template.json with the
# passwords from the rabbitmq_password and rabbitmq_admin_password secrets, into a tmpfs
# readable by RabbitMQ's user only, then run the image's own entrypoint. RabbitMQ imports
# the file at every boot (floodgate.conf), so a rotated password applies on restart.
set -eu
template=/etc/rabbitmq/floodgate/definitions.template.json
out=/run/rabbitmq-definitions/definitions.json

secret() {  # name: the secret's value, refused unless URL-safe (it also goes into a URL)
  value=$(tr -d '\r\n' < "/run/secrets/$1" 2>/dev/null || true)
  case "$value" in
    "" | *[!A-Za-z0-9._~-]*)
      echo "rabbitmq: /run/secrets/$1 is missing, empty or not URL-safe; run deploy/make-secrets.sh" >&2
      exit 1 ;;
  esac
  printf '%s' "$value"
}

app=$(secret rabbitmq_password)
admin=$(secret rabbitmq_admin_password)
umask 077
sed -e "s|@RABBITMQ_PASSWORD@|$app|" -e "s|@RABBITMQ_ADMIN_PASSWORD@|$admin|" "$template" > "$out"
exec docker-entrypoint.sh "$@"
