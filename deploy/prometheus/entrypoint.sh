#!/bin/sh
# Prometheus' entrypoint in docker-compose.yml: split FLOWER_BASIC_AUTH (user:password)
# into the two files prometheus.yml's basic_auth reads (username_file, password_file),
# on a tmpfs, readable by Prometheus' user only; then run Prometheus with the arguments
# given (compose's command). Nothing secret is written into the image or the repository.
set -eu
case "${FLOWER_BASIC_AUTH:-}" in
  ?*:?*) ;;
  *) echo "FLOWER_BASIC_AUTH must be user:password" >&2; exit 1 ;;
esac
dir=/run/flower-auth
umask 077
printf '%s' "${FLOWER_BASIC_AUTH%%:*}" > "$dir/username"
printf '%s' "${FLOWER_BASIC_AUTH#*:}" > "$dir/password"
exec /bin/prometheus "$@"
