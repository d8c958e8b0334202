"""A stand-in Hugging Face Hub on 127.0.0.1: just enough of the Hub's HTTP API for
huggingface_hub's own `HfApi.create_repo`, `create_branch` and `upload_folder` to succeed, so the
push is tested through the real client, offline.

Endpoints (as huggingface_hub 2.4 calls them; see its hf_api.py, _commit_api.py and lfs.py):

    POST /api/repos/create                             {name, organization, visibility, type}
    POST /api/models/{repo}/branch/{branch}            create a branch (409 when it exists)
    POST /api/models/{repo}/preupload/{rev}            per file: "regular" or "lfs" upload mode
    POST /api/validate-yaml                            the README front matter (legacy commit path)
    POST /{repo}.git/info/lfs/objects/batch            LFS batch API, "basic" transfer
    PUT  /lfs/{oid}                                    the LFS object (checked against its sha256)
    POST /lfs/verify                                   the LFS verify action
    POST /api/models/{repo}/commit/{rev}               ndjson: header, file (base64), lfsFile

Like the Hub, binary files (a NUL byte in the first 512 bytes the client samples) and large files go
through LFS. The Hub's Xet storage is not implemented (hf_xet speaks its own CAS protocol): a client
pushing LFS files here must run with Xet disabled (HF_HUB_DISABLE_XET=1); with `lfs=False` every
file is "regular" and the client's default (Xet-capable) upload pipeline works unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub sends text files above 10 MB through LFS too


@dataclass
class Repo:
    visibility: str | None
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    commits: list[dict[str, Any]] = field(default_factory=list)  # header values, per commit


class HubStub:
    """The server and what it received. Use as a context manager; `url` is the endpoint.

    Args:
        token: the only token accepted (`Authorization: Bearer <token>`); others get 401.
        lfs: route binary and large files through LFS (False: every file is a regular blob).
    """

    def __init__(self, token: str, lfs: bool = True):
        self.token = token
        self.lfs = lfs
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a branch, as committed (LFS pointers resolved to their content)."""
        return dict(self.repos[repo_id].branches[revision])

    # -- request handling (called on the server's threads) -----------------------------------------

    def handle(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path, headers.get("Authorization")))
        if method == "PUT" and path.startswith("/lfs/"):
            # Like S3 behind the Hub's presigned URLs: no Authorization, the URL is the grant.
            oid = path[len("/lfs/"):]
            if hashlib.sha256(body).hexdigest() != oid:
                return 400, {"error": "content does not match its sha256"}
            with self.lock:
                self.lfs_objects[oid] = body
            return 200, {}
        if headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"error": "Invalid credentials in Authorization header"}
        data = json.loads(body) if body and "ndjson" not in headers.get("Content-Type", "") \
            else None
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method != "POST":
            return 405, {"error": f"{method} {path} is not implemented by the stand-in Hub"}
        if path == "/api/repos/create":
            return self._create_repo(data)
        if path == "/api/validate-yaml":
            return self._validate_yaml(data["content"])
        if path == "/lfs/verify":
            ok = self.lfs_objects.get(data["oid"]) is not None
            return (200, {}) if ok else (404, {"error": f"LFS object {data['oid']} not uploaded"})
        if path.endswith(".git/info/lfs/objects/batch"):
            return self._lfs_batch(path[1:-len(".git/info/lfs/objects/batch")], data)
        if len(parts) == 6 and parts[:2] == ["api", "models"]:
            repo_id, action, rev = f"{parts[2]}/{parts[3]}", parts[4], parts[5]
            if repo_id not in self.repos:
                return 404, {"error": f"Repository {repo_id} not found"}
            if action == "branch":
                return self._create_branch(repo_id, rev)
            if action == "preupload":
                return self._preupload(data)
            if action == "commit":
                return self._commit(repo_id, rev, body)
        return 404, {"error": f"{method} {path} is not implemented by the stand-in Hub"}

    def _create_repo(self, data: dict[str, Any]) -> tuple[int, Any]:
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") \
            else data["name"]
        url = f"{self.url}/{repo_id}"
        with self.lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": url}
            self.repos[repo_id] = Repo(visibility=data.get("visibility"))
        return 200, {"url": url, "name": repo_id}

    def _create_branch(self, repo_id: str, branch: str) -> tuple[int, Any]:
        repo = self.repos[repo_id]
        with self.lock:
            if branch in repo.branches:
                return 409, {"error": f"Branch {branch} already exists"}
            repo.branches[branch] = dict(repo.branches["main"])
        return 200, {}

    def _preupload(self, data: dict[str, Any]) -> tuple[int, Any]:
        files = []
        for f in data["files"]:
            binary = b"\x00" in base64.b64decode(f["sample"])
            mode = "lfs" if self.lfs and (binary or f["size"] >= LFS_MIN_SIZE) else "regular"
            files.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False,
                          "oid": None})
        return 200, {"files": files, "commitOid": "0" * 40}

    def _validate_yaml(self, content: str) -> tuple[int, Any]:
        if content.startswith("---\n"):
            try:
                yaml.safe_load(content.split("\n---\n", 1)[0][4:])
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": str(e)}]}
        return 200, {"errors": [], "warnings": []}

    def _lfs_batch(self, repo_id: str, data: dict[str, Any]) -> tuple[int, Any]:
        if repo_id not in self.repos:
            return 404, {"message": f"Repository {repo_id} not found"}
        objects = [{"oid": o["oid"], "size": o["size"], "authenticated": True, "actions": {
            "upload": {"href": f"{self.url}/lfs/{o['oid']}"},
            "verify": {"href": f"{self.url}/lfs/verify", "header": {}}}}
            for o in data["objects"]]
        return 200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}

    def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, Any]:
        repo = self.repos[repo_id]
        if revision not in repo.branches:
            return 404, {"error": f"Invalid rev id: {revision}"}
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return 400, {"error": "the first ndjson line must be the commit header"}
        changes: dict[str, bytes] = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                changes[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return 422, {"error": f"{value['path']}: LFS object {value['oid']} missing"}
                changes[value["path"]] = self.lfs_objects[value["oid"]]
            else:
                return 400, {"error": f"operation {line['key']!r} not implemented"}
        oid = uuid.uuid4().hex + "0" * 8
        with self.lock:
            repo.branches[revision].update(changes)
            repo.commits.append({**lines[0]["value"], "revision": revision, "oid": oid})
        return 200, {"success": True, "commitOid": oid,
                     "commitUrl": f"{self.url}/{repo_id}/commit/{oid}"}


def _handler(hub: HubStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size)
                    self.rfile.readline()  # the CRLF after each chunk
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(chunk)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body()
            try:
                status, payload = hub.handle(self.command, urlsplit(self.path).path, self.headers,
                                             body)
            except Exception as e:  # a malformed request: tell the client, keep serving
                status, payload = 400, {"error": f"{type(e).__name__}: {e}"}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = _serve

        def log_message(self, *args: Any) -> None:  # no access log on the test's stderr
            pass

    return Handler
