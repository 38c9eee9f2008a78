#!/bin/sh
# Entry point of the runtime images: `entrypoint <runtime module> [flags...]`.
#
# Starts `python -m <module>` with KServe's defaults first and the container's own arguments
# after them: the flags parse last-one-wins, so KServe's `args:` (--model_name={{.Name}}
# --model_dir=/mnt/models --http_port=8080 ...) or `docker run IMAGE --workers=2` override a
# default and keep the rest. MODEL_DIR, HTTP_PORT and GRPC_PORT in the environment replace the
# defaults too. Arguments that do not start with "-" are a command to run instead
# (`docker run -it IMAGE bash`).
set -eu
module="$1"
shift
case "${1:-}" in
  "" | -*)
    exec python -m "$module" \
      --model_dir="${MODEL_DIR:-/mnt/models}" \
      --http_port="${HTTP_PORT:-8080}" \
      --grpc_port="${GRPC_PORT:-8081}" \
      "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
