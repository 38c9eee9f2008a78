#!/usr/bin/env bash
# MLServer 1.7.1 in a virtualenv of its own (.cache/mlserver): its pins would downgrade
# fastapi and starlette for every other suite. The tests build requests with its codec classes
# (mlserver.codecs) in that environment, and run MLServer itself on the same model files to
# compare its answers with ours. scikit-learn is the version of the project's .venv, so the same
# model files load in both.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
VENV="$ROOT/.cache/mlserver"
SKLEARN="$("$PY" -c 'import sklearn; print(sklearn.__version__)')"
WANTED="mlserver==1.7.1 mlserver-sklearn==1.7.1 uvloop<0.22 scikit-learn==$SKLEARN"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$WANTED" ]; then
  BASE="$("$PY" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
  "$BASE" -m venv --clear "$VENV"
  # uvloop 0.22 breaks MLServer 1.7.1's inference workers (SeldonIO/MLServer#2286).
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check $WANTED
  echo "$WANTED" > "$VENV/.requirements"
fi
