"""Dynamic batching over real concurrent HTTP requests: order, isolation, mixed shapes."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "tests" / "core" / "custom_models.py")


@pytest.fixture(scope="module")
def server(launch):
    return launch(SCRIPT)


def request_for(i: int) -> list:
    """Request i: a row of width 2 or 3 (never merged together); every third width-3 request
    is negative, which the model refuses: its batch-mates must still succeed."""
    width = 2 if i % 3 else 3
    sign = -1 if i % 9 == 0 else 1
    return [[sign * (i * 10 + k) for k in range(width)]]


def send(url: str, rows: list) -> requests.Response:
    body = {"inputs": [{"name": "x", "datatype": "INT64", "shape": [len(rows), len(rows[0])],
                        "data": rows}]}
    return requests.post(f"{url}/v2/models/batched/infer", json=body, timeout=30)


def test_concurrent_requests_are_merged_and_split_back_in_order(server):
    total = 96
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda i: send(server.url, request_for(i)), range(total)))
    merged_calls = 0
    for i, reply in enumerate(replies):
        rows = request_for(i)
        if min(rows[0]) < 0:
            assert reply.status_code == 500, reply.text
            assert reply.json() == {"error": "model 'batched' failed: ValueError: negative input"}
            continue
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        assert outputs["double"]["shape"] == [1, len(rows[0])]
        assert outputs["double"]["data"] == [2 * v for v in rows[0]]
        merged_calls += outputs["batch_rows"]["data"][0] > 1
    assert merged_calls > 0, "no request was ever merged with another"


def test_multi_row_requests_keep_their_rows(server):
    rows_a = [[1, 2], [3, 4], [5, 6]]
    rows_b = [[7, 8]]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda r: send(server.url, r), [rows_a, rows_b] * 8))
    for reply, rows in zip(replies, [rows_a, rows_b] * 8):
        double = reply.json()["outputs"][0]
        assert double["shape"] == [len(rows), 2]
        assert double["data"] == [2 * v for row in rows for v in row]


def test_a_lone_request_is_not_held_back(server):
    reply = send(server.url, [[1, 2]])
    assert reply.status_code == 200
    assert reply.elapsed.total_seconds() < 1.0
