#!/usr/bin/env bash
# Move the base image pin of both Dockerfiles to what a tag points to today:
#
#   deploy/update-base-image.sh                    # python:3.11-slim
#   deploy/update-base-image.sh python:3.11-slim   # or another tag of the same image
#
# It asks the registry for the tag's current digest (the multi-platform index, so --platform still picks
# linux/amd64 for Cloud Run) with the first of crane, docker buildx or skopeo that is installed, and
# rewrites `ARG PYTHON_IMAGE=<tag>@sha256:...` in backend.dockerfile and frontend.dockerfile. Review the
# diff, rebuild, run the tests, commit. (Dependabot cannot do this for us: it does not read an ARG's
# default in FROM, https://github.com/dependabot/dependabot-core/issues/2057.)
set -euo pipefail

image="${1:-python:3.11-slim}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dockerfiles=("$root/backend.dockerfile" "$root/frontend.dockerfile")

if command -v crane >/dev/null; then
  digest=$(crane digest "$image")
elif command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then
  digest=$(docker buildx imagetools inspect "$image" --format '{{.Manifest.Digest}}')
elif command -v skopeo >/dev/null; then
  # the digest of a manifest is the SHA-256 of its exact bytes
  digest="sha256:$(skopeo inspect --raw "docker://$image" | sha256sum | cut -d' ' -f1)"
else
  echo "update-base-image: install crane, docker (with buildx) or skopeo to look the digest up" >&2
  exit 2
fi
digest=$(tr -d '[:space:]' <<<"$digest")
if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "update-base-image: '$digest' is not a sha256 digest" >&2
  exit 1
fi

for dockerfile in "${dockerfiles[@]}"; do
  grep -q '^ARG PYTHON_IMAGE=' "$dockerfile" || { echo "update-base-image: no ARG PYTHON_IMAGE in $dockerfile" >&2; exit 1; }
  sed -i.bak -E "s|^ARG PYTHON_IMAGE=.*$|ARG PYTHON_IMAGE=${image}@${digest}|" "$dockerfile"
  rm -f "$dockerfile.bak"
  echo "$(basename "$dockerfile"): ARG PYTHON_IMAGE=${image}@${digest}"
done
