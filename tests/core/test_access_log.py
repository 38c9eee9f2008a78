"""The access log's batched writes keep lines whole for pipes shared by several workers."""

import asyncio
import json
import sys

from modelserver.ops.logs import PIPE_BUF, AccessLog


class RecordingStream:
    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def test_batched_lines_go_out_whole_in_writes_a_pipe_keeps_together(monkeypatch):
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    log = AccessLog()
    log.configure(True, "json")
    log.enabled = True  # whatever level this test process logs at

    async def requests() -> None:
        for i in range(500):
            log("POST", f"/v2/models/model-{i}/infer", f"model-{i}", 200, 0.001)
        log.flush()

    asyncio.run(requests())
    assert len(stream.writes) > 1
    assert all(len(w.encode()) <= PIPE_BUF and w.endswith("\n") for w in stream.writes)
    entries = [json.loads(line) for line in "".join(stream.writes).splitlines()]
    assert [e["model"] for e in entries] == [f"model-{i}" for i in range(500)]
    assert entries[0]["path"] == "/v2/models/model-0/infer" and entries[0]["status"] == 200


def test_a_path_cannot_write_a_line_of_its_own(monkeypatch):
    """A percent-encoded newline in a path (decoded before routing) is escaped in the text
    log, so a client cannot forge the lines that follow."""
    stream = RecordingStream()
    monkeypatch.setattr(sys, "stderr", stream)
    log = AccessLog()
    log.configure(True, "text")
    log.enabled = True
    log("GET", "/v2/models/a\n2026-11-30 12:00:00,000 INFO forged\x1b[2J/ready", None, 404, 0.001)
    log.flush()
    lines = "".join(stream.writes).splitlines()
    assert len(lines) == 1 and "\\n2026-11-30" in lines[0] and "\\x1b" in lines[0]
