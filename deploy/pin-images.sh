#!/bin/sh
# Refreshes the image digests of docker-compose.yml and the Dockerfile from the registry:
# for every `name:tag@sha256:<digest>` it asks what the tag points to now (its
# multi-platform index) and writes that digest in place. Needs crane, or docker with buildx.
#
#   deploy/pin-images.sh            # rewrite the files; then review `git diff`
#   deploy/pin-images.sh --check    # change nothing; exit 1 if a digest is not the tag's
#
# Then record the new digests, and where they came from, in deploy/IMAGES.md.
set -eu
cd "$(dirname "$0")/.."
files="docker-compose.yml Dockerfile"
check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

digest_of() {  # name:tag -> sha256:...
  if command -v crane >/dev/null 2>&1; then
    crane digest "$1"
  elif docker buildx version >/dev/null 2>&1; then
    docker buildx imagetools inspect "$1" --format '{{.Manifest.Digest}}'
  else
    echo "pin-images: needs crane (github.com/google/go-containerregistry) or docker buildx" >&2
    return 1
  fi
}

stale=0
for pinned in $(grep -Eoh '[A-Za-z0-9./_-]+:[A-Za-z0-9._-]+@sha256:[0-9a-f]{64}' $files | sort -u); do
  ref=${pinned%@*}
  old=${pinned#*@}
  new=$(digest_of "$ref")
  case "$new" in
    sha256:*) ;;
    *) echo "pin-images: no digest for $ref (got '$new')" >&2; exit 1 ;;
  esac
  if [ "$new" = "$old" ]; then
    echo "current  $ref@$old"
    continue
  fi
  stale=1
  echo "changed  $ref: $old -> $new"
  if ! $check; then
    for file in $files; do
      sed -i.bak "s|$ref@$old|$ref@$new|g" "$file" && rm -f "$file.bak"
    done
  fi
done

if $check && [ "$stale" = 1 ]; then
  echo "pin-images: some digests are not what their tags point to now; run $0" >&2
  exit 1
fi
