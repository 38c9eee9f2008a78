"""Helpers of the security tests: a model source over HTTP that records what it is asked for,
a pickle that runs code, and model folders."""

from __future__ import annotations

import pickle
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

REPO = Path(__file__).resolve().parents[2]
IRIS = REPO / "examples" / "sklearn-iris" / "model.joblib"
ROW = [[6.8, 2.8, 4.8, 1.4]]


class Source:
    """An HTTP server of model files on loopback that records every path it is asked for. A
    path in `redirects` answers 302 to where it says; any other serves `files[path]` (the path
    decoded, as servers do)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.redirects: dict[str, str] = {}
        self.asked: list[str] = []
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                source.asked.append(self.path)
                path = unquote(urlsplit(self.path).path)
                if path in source.redirects:
                    self.send_response(302)
                    self.send_header("Location", source.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = source.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Evil:
    """Unpickled, it writes a file: proof that loading it ran code."""

    def __init__(self, proof: Path):
        self.proof = proof

    def __reduce__(self):
        return exec, (f"open({str(self.proof)!r}, 'w').write('ran')",)


def evil_pickle(proof: Path) -> bytes:
    return pickle.dumps(Evil(proof))


def iris_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(IRIS, folder / "model.joblib")
    return folder
