#!/usr/bin/env bash
# Azurite (the Azure Blob emulator) from npm, for the storage tests; quick when already there.
set -euo pipefail
dir="$(cd "$(dirname "$0")/../.." && pwd)/.cache/azurite"
[ -x "$dir/node_modules/.bin/azurite-blob" ] && exit 0
command -v npm >/dev/null || { echo "npm is needed for the Azure storage tests" >&2; exit 1; }
mkdir -p "$dir"
npm install --prefix "$dir" --silent --no-audit --no-fund azurite@3.35.0
