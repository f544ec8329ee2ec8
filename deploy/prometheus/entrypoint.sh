#!/bin/sh
# Prometheus' entrypoint in docker-compose.yml: split the flower_basic_auth secret
# (user:password) into the two files prometheus.yml's basic_auth reads (username_file,
# password_file), on a tmpfs readable by Prometheus' user only; then run Prometheus with
# the arguments given (compose's command). The API's bearer token is read straight from
# the ops_token secret. Nothing secret is in the image, the repository or the environment.
set -eu
auth=$(tr -d '\r\n' < /run/secrets/flower_basic_auth 2>/dev/null || true)
case "$auth" in
  ?*:?*) ;;
  *) echo "prometheus: /run/secrets/flower_basic_auth must hold user:password; run deploy/make-secrets.sh" >&2; exit 1 ;;
esac
dir=/run/flower-auth
umask 077
printf '%s' "${auth%%:*}" > "$dir/username"
printf '%s' "${auth#*:}" > "$dir/password"
exec /bin/prometheus "$@"
