#!/bin/sh
# Redis' entrypoint in docker-compose.yml: write the ACL file from the redis_password
# secret, then run the image's own entrypoint with it. The file holds only the password's
# SHA-256 (Redis' "#<hash>" rule), on a tmpfs, so it exists only while the container runs.
#
# Users: "default" (what a client without AUTH is) is off; "floodgate" may use any key and
# channel of this Redis, which serves Floodgate alone (result backend, meter, rate limits,
# job events), and every command but the @dangerous ones (CONFIG, KEYS, FLUSHALL, DEBUG,
# MONITOR, SHUTDOWN, ...), which the application never sends.
set -eu
secret=/run/secrets/redis_password
acl=/run/redis/users.acl
if [ ! -s "$secret" ]; then
  echo "redis: $secret is missing or empty; run deploy/make-secrets.sh" >&2
  exit 1
fi
hash=$(tr -d '\r\n' < "$secret" | sha256sum | cut -d' ' -f1)
umask 077
printf 'user default off\nuser floodgate on #%s ~* &* +@all -@dangerous\n' "$hash" > "$acl"
exec docker-entrypoint.sh "$@" --aclfile "$acl"
