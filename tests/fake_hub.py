"""A small server that answers the Hugging Face Hub's API the way huggingface_hub calls it, as
moto stands in for S3: for tests/storage, and for the storage initializer's image test. A module
of its own (not a conftest) so that any test folder imports the same one."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
from urllib.parse import parse_qs, unquote

@dataclasses.dataclass
class HubRepo:
    refs: dict[str, str] = dataclasses.field(default_factory=dict)  # branch or tag: commit
    commits: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)
    token: str | None = None  # private: seen only with this token
    gated: bool = False  # files need a token
    gzip: dict[str, bytes] = dataclasses.field(default_factory=dict)  # path: gzip body sent
    corrupt: set[str] = dataclasses.field(default_factory=set)  # served with a byte changed
    flaky: int = 0  # the info call answers 503 this many times first


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith((".bin", ".safetensors"))  # as a model repo's .gitattributes says


class HubHandler(http.server.BaseHTTPRequestHandler):
    """The Hub's API as huggingface_hub 2.x calls it:
    GET /api/models/<repo>[/revision/<rev>]              model info: the commit `sha`
    GET /api/models/<repo>/tree/<rev>?recursive=...      the listing, 3 entries a page (Link:
                                                         rel="next" with a cursor)
    HEAD|GET /<repo>/resolve/<rev>/<path>                a file: X-Repo-Commit, ETag (git blob
                                                         id) and Content-Length; LFS files a 302
                                                         to the CDN with X-Linked-Etag (sha256)
                                                         and X-Linked-Size
    GET /cdn/<sha256> (the CDN, another port)            LFS content
    Errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), which
    huggingface_hub turns into its exception classes."""

    repos: dict[str, HubRepo] = {}
    blobs: dict[str, bytes] = {}  # sha256: LFS content
    cdn = ""  # the CDN's base URL
    cdn_authorizations: list[str] = []  # Authorization headers the CDN saw
    protocol_version = "HTTP/1.1"
    PAGE = 3

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[0] == "cdn":
            self.cdn_authorizations.append(self.headers.get("Authorization", ""))
            self.reply(200, self.blobs[parts[1]])
        elif parts[:2] == ["api", "models"] and len(parts) in (4, 6) and \
                parts[4:5] in ([], ["revision"]):
            self.info("/".join(parts[2:4]), parts[5] if len(parts) == 6 else "main")
        elif parts[:2] == ["api", "models"] and parts[4:5] == ["tree"]:
            self.tree("/".join(parts[2:4]), parts[5], "/".join(parts[6:]), parse_qs(query))
        elif len(parts) >= 5 and parts[2] == "resolve":
            self.resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
        else:
            self.error(404, "", "not a Hub route")

    def reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, status: int, code: str, message: str) -> None:
        self.reply(status, json.dumps({"error": message}).encode(),
                   {"X-Error-Code": code, "X-Error-Message": message} if code else {})

    def repo(self, repo_id: str, files: bool = False) -> HubRepo | None:
        """The repository, if this request may see it (else an error is sent)."""
        repo = self.repos.get(repo_id)
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if repo is None or (repo.token and token != repo.token):
            self.error(401, "RepoNotFound", "Repository not found")
        elif files and repo.gated and not token:
            self.error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
        else:
            return repo
        return None

    def commit(self, repo: HubRepo, revision: str) -> str | None:
        commit = repo.refs.get(revision) or (revision if revision in repo.commits else None)
        if commit is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def info(self, repo_id: str, revision: str) -> None:
        if (repo := self.repo(repo_id)) is None:
            return
        if repo.flaky:
            repo.flaky -= 1
            return self.error(503, "", "Service Unavailable")
        if (commit := self.commit(repo, revision)) is not None:
            self.reply(200, json.dumps({
                "id": repo_id, "sha": commit, "private": bool(repo.token), "gated": repo.gated,
                "siblings": [{"rfilename": name} for name in repo.commits[commit]]}).encode(),
                {"Content-Type": "application/json"})

    def tree(self, repo_id: str, revision: str, folder: str, query: dict) -> None:
        if (repo := self.repo(repo_id)) is None or (commit := self.commit(repo, revision)) is None:
            return
        assert query.get("recursive") == ["true"], query  # only what modelstorage asks for
        entries = []
        for name, data in sorted(repo.commits[commit].items()):
            for depth in range(1, name.count("/") + 1):
                directory = "/".join(name.split("/")[:depth])
                entry = {"type": "directory", "oid": "0" * 40, "size": 0, "path": directory}
                if entry not in entries:
                    entries.append(entry)
            entry = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
            if is_lfs(name):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                                "pointerSize": 134}
            entries.append(entry)
        entries = [e for e in entries if not folder or e["path"].startswith(folder + "/")]
        start = int(query.get("cursor", ["0"])[0])
        headers = {"Content-Type": "application/json"}
        if start + self.PAGE < len(entries):
            base = f"http://{self.headers['Host']}{self.path.partition('?')[0]}"
            headers["Link"] = f'<{base}?recursive=true&cursor={start + self.PAGE}>; rel="next"'
        self.reply(200, json.dumps(entries[start:start + self.PAGE]).encode(), headers)

    def resolve(self, repo_id: str, revision: str, name: str) -> None:
        if (repo := self.repo(repo_id, files=True)) is None or \
                (commit := self.commit(repo, revision)) is None:
            return
        data = repo.commits[commit].get(name)
        if data is None:
            return self.error(404, "EntryNotFound", f"{name} does not exist at {commit}")
        headers = {"X-Repo-Commit": commit}
        if is_lfs(name):
            sha256 = hashlib.sha256(data).hexdigest()
            self.blobs[sha256] = data
            return self.reply(302, b"", {**headers, "Location": f"{self.cdn}/cdn/{sha256}",
                                         "X-Linked-Etag": f'"{sha256}"',
                                         "X-Linked-Size": str(len(data))})
        headers["ETag"] = f'"{git_blob_id(data)}"'
        if name in repo.gzip and self.command == "GET":
            return self.reply(200, repo.gzip[name], {**headers, "Content-Encoding": "gzip"})
        if name in repo.corrupt:
            data = bytes([data[0] ^ 1]) + data[1:]
        self.reply(200, data, headers)


def start_hub() -> tuple[str, list[http.server.HTTPServer]]:
    """The Hub's base URL, and its servers (the Hub and its CDN, on another port, for LFS
    content) to shut down after."""
    hub, cdn = (http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubHandler) for _ in range(2))
    for server in (hub, cdn):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    HubHandler.cdn = f"http://127.0.0.1:{cdn.server_address[1]}"
    return f"http://127.0.0.1:{hub.server_address[1]}", [hub, cdn]


def push(repo_id: str, files: dict[str, bytes], branch: str = "main", **fields) -> str:
    """Files as a new commit of a repository on the Hub (made if new; `fields` set HubRepo's
    options); returns the commit."""
    repo = HubHandler.repos.setdefault(repo_id, HubRepo())
    for name, value in fields.items():
        setattr(repo, name, value)
    commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
    repo.commits[commit] = dict(files)
    repo.refs[branch] = commit
    return commit
