#!/usr/bin/env bash
# The KServe SDK 0.21 for test_kserve_sdk.py. Its own pins would downgrade pandas below 3 for
# every suite (kserve 0.21 asks pandas<3) and let kubernetes pull python-dateutil 4, which
# botocore refuses; so its dependencies are installed here without those two, then kserve
# itself without dependencies. Its inference clients do not use pandas.
set -euo pipefail
PY="${PY:-$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
if ! "$PY" -c "import importlib.metadata as m; assert m.version('kserve') == '0.21.0'" 2>/dev/null
then
"$PY" -m pip install -q \
  "uvicorn[standard]>=0.30.6,<1" "watchfiles>=1.0.4,<2" "fastapi>=0.115.3,<1" "starlette>=1.3.1" \
  "cloudevents>=1.6.2,<2" "six>=1.16,<2" "kubernetes>=23.3.0" "python-dateutil>=2.8,<3" \
  "numpy>=1.26,<3" "psutil>=5.9.6,<6" "grpcio>=1.73,<2" "grpcio-tools>=1.73,<2" \
  "grpc-interceptor>=0.15.4,<1" "protobuf>=6.33.5,<7" "prometheus-client>=0.20,<1" \
  "orjson>=3.11.6,<4" "httpx>=0.27.2,<1" "timing-asgi>=0.3,<1" "tabulate>=0.9,<1" \
  "pydantic>=2.5,<3" "pyyaml>=6,<7" "urllib3>=2.7" "aiohttp>=3.13.4" "h11>=0.16" \
  "cryptography>=50" "python-multipart>=0.0.27" "pyjwt>=2.13" "pyasn1>=0.6.4" "pillow>=12.3"
"$PY" -m pip install -q --no-deps "kserve==0.21.0"
fi

# NVIDIA's perf_analyzer for test_perf_analyzer.py, from the shared tools beside the project
# (its wheel needs a newer glibc than Debian 12's; the tool unpacks one beside it).
if [ -f "$ROOT/../shared/tools/setup-perf-analyzer" ]; then
  bash "$ROOT/../shared/tools/setup-perf-analyzer" "$ROOT/.cache/perf_analyzer" >/dev/null
fi
