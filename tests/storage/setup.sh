#!/usr/bin/env bash
# Azurite (the Azure Blob emulator) from npm into .cache/azurite, for tests/storage.
# Idempotent, and instant when the pinned version is already there.
set -euo pipefail
version=3.35.0
dir="$(cd "$(dirname "$0")/../.." && pwd)/.cache/azurite"
grep -qs "\"version\": \"$version\"" "$dir/node_modules/azurite/package.json" \
  && [ -x "$dir/node_modules/.bin/azurite-blob" ] && exit 0
command -v npm >/dev/null || { echo "tests/storage/setup.sh: npm is needed (azurite)" >&2; exit 1; }
mkdir -p "$dir"
npm install --prefix "$dir" --no-audit --no-fund --silent "azurite@$version"
