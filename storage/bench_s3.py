"""Download throughput from a local moto S3 server: `python -m modelstorage` against
`aws s3 cp --recursive` on the same data, both as fresh processes (so both pay start-up).

    .venv/bin/python storage/bench_s3.py --aws /tmp/awsvenv/bin/aws [--runs 3]

Not part of the test suite. moto serves from one Python process, so on a small machine it is
the bottleneck for both tools: compare the two, not against a real S3.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUCKET = "bench"
CASES = {  # name: (files, bytes each)
    "one 50 MB object": (1, 50 * 1024 * 1024),
    "1,000 files of 10 KB": (1000, 10 * 1024),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def upload(s3, prefix: str, count: int, size: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = os.urandom(size)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=BUCKET, Key=f"{prefix}/f{i:05d}", Body=data),
                      range(count)))


def timed(command: list[str], env: dict, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    took = time.perf_counter() - start
    shutil.rmtree(dest)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aws", default="/tmp/awsvenv/bin/aws", help="the aws CLI to compare")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's log line per request

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_ENDPOINT_URL": endpoint}
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="bench", aws_secret_access_key="bench")
    s3.create_bucket(Bucket=BUCKET)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        print(f"{'case':24} {'tool':14} {'median s':>9} {'MB/s':>7} {'files/s':>8}")
        for index, (name, (count, size)) in enumerate(CASES.items()):
            prefix = f"case{index}"
            upload(s3, prefix, count, size)
            uri, dest = f"s3://{BUCKET}/{prefix}", work / "dest"
            tools = {
                "modelstorage": [sys.executable, "-m", "modelstorage", uri, str(dest)],
                "aws s3 cp": [args.aws, "s3", "cp", "--recursive", "--only-show-errors",
                              "--endpoint-url", endpoint, uri, str(dest)],
            }
            times: dict[str, list[float]] = {tool: [] for tool in tools}
            for _ in range(args.runs):  # alternated, so that load from elsewhere hits both
                for tool, command in tools.items():
                    times[tool].append(timed(command, env, dest))
            for tool, runs in times.items():
                took = statistics.median(runs)
                megabytes = count * size / 1e6
                print(f"{name:24} {tool:14} {took:9.2f} {megabytes / took:7.1f} "
                      f"{count / took:8.0f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        server.stop()


if __name__ == "__main__":
    main()
