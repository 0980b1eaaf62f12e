"""A small in-memory Hugging Face Hub for tests.

The real ``huggingface_hub`` client (2.x, httpx-based) talks to it over real HTTP on 127.0.0.1. It implements
the endpoints that client uses for pulling and pushing model repos, with the same URLs, headers and error
codes as huggingface.co:

=========================================================  ================================================
endpoint                                                   used by
=========================================================  ================================================
GET  /api/whoami-v2                                        ``whoami``
POST /api/repos/create                                     ``create_repo`` (409 + url when it exists)
POST /api/validate-yaml                                    README.md metadata check before a commit
GET  /api/models/{repo}[/revision/{rev}]                   ``model_info``/``repo_info`` (sha, siblings)
GET  /api/models/{repo}/tree/{rev}[/{path}]                ``list_repo_tree``/``list_repo_files``
POST /api/models/{repo}/paths-info/{rev}                   ``get_paths_info``
GET  /api/models/{repo}/refs                               ``list_repo_refs``
POST /api/models/{repo}/branch/{branch}                    ``create_branch``
POST /api/models/{repo}/preupload/{rev}                    upload mode (lfs/regular), shouldIgnore, oid
POST /api/models/{repo}/commit/{rev}[?create_pr=1]         NDJSON commit: header/file/lfsFile/deleted*
POST /api/models/{repo}/discussions, GET .../{num}         pull requests (``create_pull_request``)
POST /{repo}.git/info/lfs/objects/batch                    LFS batch API (basic transfer)
POST /{repo}.git/info/lfs/objects/verify                   LFS verify action
GET|HEAD /{repo}/resolve/{rev}/{path}                      downloads: X-Repo-Commit, ETag, X-Linked-*
=========================================================  ================================================

LFS bytes do not go through the Hub port: like S3/CloudFront, they go to a second "CDN" server (another port, so
another origin for the client) with signed URLs: ``PUT /lfs-upload/{oid}?sig=`` and ``GET /lfs-download/{oid}?sig=``
(Range supported). The client must not send its token there; the server records whether it did.

Repos are kept in memory with real commits (a sha per commit, parents, branches, tags, ``refs/pr/N``); any
revision (branch, tag, PR ref, full or abbreviated sha) can be resolved. Private repos answer 401/404 with
``X-Error-Code: RepoNotFound`` like the Hub, gated repos ``GatedRepo``; an unknown token gets 401
``Invalid credentials in Authorization header``.

Tests can seed repos directly (:meth:`HubServer.create_repo`, :meth:`HubServer.commit_files`), read what was
pushed (:meth:`HubServer.file_bytes`, :meth:`HubServer.list_files`), count traffic (:attr:`HubServer.stats`,
:attr:`HubServer.log`) and inject faults (:meth:`HubServer.add_fault`), e.g. drop the connection in the middle of
a download or refuse an upload.

Only the standard library (plus PyYAML for the card metadata check) is used.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
        "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
        "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
    ).split()
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub stores any file of 10 MB or more in LFS


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --------------------------------------------------------------------------------------------------- data model


@dataclass
class FileEntry:
    path: str
    size: int
    oid: str  # git blob id: of the content (regular) or of the LFS pointer (LFS)
    sha256: str  # sha256 of the content (key into the content store)
    lfs: bool

    def tree_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            out["lfs"] = {
                "oid": self.sha256,
                "size": self.size,
                "pointerSize": len(lfs_pointer(self.sha256, self.size)),
            }
        return out


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, FileEntry]
    title: str
    description: str
    author: str
    date: str


@dataclass
class PullRequest:
    num: int
    title: str
    description: str
    author: str
    created_at: str
    base: str = "main"

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.num}"


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    gated: str | bool = False  # False, "auto" or "manual"
    granted: set[str] = field(default_factory=set)  # users allowed into a gated repo
    created_at: str = field(default_factory=_now_iso)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pr_refs: dict[str, str] = field(default_factory=dict)  # "refs/pr/1" -> sha
    commits: dict[str, Commit] = field(default_factory=dict)
    prs: dict[int, PullRequest] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)  # sha256 of LFS objects stored for this repo

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> str | None:
        """Commit sha for a branch, tag, PR ref, full or abbreviated (>= 7 chars) sha; None if unknown."""
        for refs in (self.branches, self.tags, self.pr_refs):
            if revision in refs:
                return refs[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches[revision[11:]]
        if revision.startswith("refs/tags/") and revision[10:] in self.tags:
            return self.tags[revision[10:]]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in self.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def writable_ref(self, revision: str) -> tuple[dict[str, str], str] | None:
        """The ref dict and key a commit on `revision` moves (branches and PR refs only, like the Hub)."""
        if revision in self.branches:
            return self.branches, revision
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches, revision[11:]
        if revision in self.pr_refs:
            return self.pr_refs, revision
        return None


@dataclass
class User:
    name: str
    orgs: list[str]
    role: str = "write"  # "read" or "write"

    def can_see_namespace(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs

    def can_write_namespace(self, namespace: str) -> bool:
        return self.role == "write" and self.can_see_namespace(namespace)


@dataclass
class Fault:
    """Make matching requests fail.

    kind:
        "drop": close the connection without answering (after reading the request body);
        "truncate": (downloads) send the headers and half the body, then close the connection;
        "status": answer with HTTP `status`.
    """

    method: str
    path_regex: str
    kind: str = "drop"
    times: int = 1  # how many matching requests fail; -1 = all
    status: int = 500
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times == 0 or (self.method != "*" and self.method != method):
            return False
        return re.search(self.path_regex, path) is not None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


# --------------------------------------------------------------------------------------------------- the server


class HubServer:
    """Two HTTP servers on 127.0.0.1 (the Hub API and a "CDN" for LFS bytes) sharing one in-memory state.

    Example:
        >>> server = HubServer().start()
        >>> token = server.add_user("alice", orgs=["acme"])
        >>> server.create_repo("acme/tiny", files={"config.json": b"{}"})
        >>> server.endpoint  # point HF_ENDPOINT / huggingface_hub.constants.ENDPOINT here
        'http://127.0.0.1:...'
        >>> server.stop()
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, User] = {}  # token -> user
        self.content: dict[str, bytes] = {}  # sha256 -> bytes (git blobs and LFS objects)
        self.pending_uploads: dict[str, tuple[str, str, int]] = {}  # signature -> (repo_id, oid, size)
        self.download_sigs: dict[str, str] = {}  # signature -> oid
        self.faults: list[Fault] = []
        self.force_regular_uploads = False  # preupload answers "regular" for every file (no LFS, no Xet)
        self.token = ""  # the token the test fixture uses (set by the `hub_server` fixture)
        self.stats: Counter[str] = Counter()
        self.log: list[dict[str, Any]] = []
        self._commit_counter = 0
        self._hub: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "HubServer":
        self._hub = self._make_server("hub")
        self._cdn = self._make_server("cdn")
        for srv in (self._hub, self._cdn):
            thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_server(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            server_role = role
            state = hub

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        srv.daemon_threads = True
        return srv

    @property
    def endpoint(self) -> str:
        assert self._hub is not None, "server not started"
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_endpoint(self) -> str:
        assert self._cdn is not None, "server not started"
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    # ---------------------------------------------------------------- test helpers (Python side)

    def add_user(
        self, name: str, *, orgs: list[str] | None = None, role: str = "write", token: str | None = None
    ) -> str:
        """Register a user and return their token."""
        token = token or f"hf_{secrets.token_hex(16)}"
        with self.lock:
            self.users[token] = User(name=name, orgs=list(orgs or []), role=role)
        return token

    def add_fault(
        self, method: str, path_regex: str, kind: str = "drop", *, times: int = 1, status: int = 500
    ) -> Fault:
        fault = Fault(method=method, path_regex=path_regex, kind=kind, times=times, status=status)
        with self.lock:
            self.faults.append(fault)
        return fault

    def reset_stats(self) -> None:
        with self.lock:
            self.stats.clear()
            self.log.clear()

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool = False,
        gated: str | bool = False,
        files: dict[str, bytes] | None = None,
        author: str = "seed",
    ) -> Repo:
        """Create a repo (initial commit with the Hub's default .gitattributes) and optionally commit `files`."""
        with self.lock:
            if repo_id in self.repos:
                raise ValueError(f"{repo_id} exists")
            repo = Repo(repo_id=repo_id, private=private, gated=gated)
            self.repos[repo_id] = repo
            entry = self._store_file(repo, ".gitattributes", DEFAULT_GITATTRIBUTES.encode(), lfs=False)
            sha = self._new_commit(repo, None, {".gitattributes": entry}, "initial commit", "", author)
            repo.branches["main"] = sha
        if files:
            self.commit_files(repo_id, files, author=author)
        return repo

    def commit_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        branch: str = "main",
        message: str = "seed files",
        delete: list[str] | None = None,
        author: str = "seed",
    ) -> str:
        """Commit `files` directly on `branch` (LFS chosen like the Hub would); returns the commit sha."""
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo.branches[branch]
            tree = dict(repo.commits[parent].files)
            for path in delete or []:
                tree.pop(path, None)
            for path, data in files.items():
                lfs = self._upload_mode(repo, parent, path, len(data), data[:512]) == "lfs"
                tree[path] = self._store_file(repo, path, data, lfs=lfs)
            sha = self._new_commit(repo, parent, tree, message, "", author)
            repo.branches[branch] = sha
            return sha

    def head(self, repo_id: str, revision: str = "main") -> str:
        with self.lock:
            sha = self.repos[repo_id].resolve(revision)
            assert sha is not None, f"unknown revision {revision}"
            return sha

    def list_files(self, repo_id: str, revision: str = "main") -> list[str]:
        with self.lock:
            repo = self.repos[repo_id]
            return sorted(repo.commits[self.head(repo_id, revision)].files)

    def file_entry(self, repo_id: str, path: str, revision: str = "main") -> FileEntry:
        with self.lock:
            return self.repos[repo_id].commits[self.head(repo_id, revision)].files[path]

    def file_bytes(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        with self.lock:
            return self.content[self.file_entry(repo_id, path, revision).sha256]

    # ---------------------------------------------------------------- state internals (call with lock held)

    def _store_file(self, repo: Repo, path: str, data: bytes, *, lfs: bool) -> FileEntry:
        sha256 = hashlib.sha256(data).hexdigest()
        self.content[sha256] = data
        if lfs:
            repo.lfs_objects.add(sha256)
            oid = git_blob_sha1(lfs_pointer(sha256, len(data)))
        else:
            oid = git_blob_sha1(data)
        return FileEntry(path=path, size=len(data), oid=oid, sha256=sha256, lfs=lfs)

    def _new_commit(
        self, repo: Repo, parent: str | None, files: dict[str, FileEntry], title: str, description: str, author: str
    ) -> str:
        self._commit_counter += 1
        payload = json.dumps(
            {
                "parent": parent,
                "tree": sorted((p, f.oid) for p, f in files.items()),
                "title": title,
                "description": description,
                "author": author,
                "n": self._commit_counter,
                "t": time.time(),
            }
        ).encode()
        sha = hashlib.sha1(b"commit %d\0" % len(payload) + payload).hexdigest()
        repo.commits[sha] = Commit(sha, parent, dict(files), title, description, author, _now_iso())
        return sha

    def _lfs_patterns(self, repo: Repo, commit: str) -> list[str]:
        entry = repo.commits[commit].files.get(".gitattributes")
        if entry is None:
            return []
        patterns = []
        for line in self.content[entry.sha256].decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _upload_mode(self, repo: Repo, commit: str, path: str, size: int, sample: bytes) -> str:
        if self.force_regular_uploads:
            return "regular"
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        name = path.rsplit("/", 1)[-1]
        for pattern in self._lfs_patterns(repo, commit):
            target = path if "/" in pattern else name
            if fnmatch.fnmatchcase(target, pattern.replace("**/", "")) or fnmatch.fnmatchcase(target, pattern):
                return "lfs"
        return "regular"


# --------------------------------------------------------------------------------------------------- HTTP handler

_REPO = r"(?P<repo>[^/]+/[^/]+)"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_role = "hub"
    state: HubServer
    timeout = 30

    # quiet
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # ---------------------------------------------------------------- plumbing

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        state = self.state
        split = urlsplit(self.path)
        path, query = split.path, parse_qs(split.query)
        body = self._read_body() if method in ("POST", "PUT") else b""
        with state.lock:
            state.stats["requests"] += 1
            state.log.append(
                {
                    "role": self.server_role,
                    "method": method,
                    "path": path,
                    "auth": "authorization" in {k.lower() for k in self.headers.keys()},
                    "range": self.headers.get("Range"),
                }
            )
            fault = next((f for f in state.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
                if fault.times > 0:
                    fault.times -= 1
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "status":
            self._error(HubError(fault.status, f"Injected failure (HTTP {fault.status})."))
            return
        self._truncate = fault is not None and fault.kind == "truncate"
        try:
            if self.server_role == "cdn":
                self._route_cdn(method, path, query, body)
            else:
                self._route_hub(method, path, query, body)
        except HubError as err:
            self._error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
    ) -> None:
        head = head or self.command == "HEAD"  # never a body after a HEAD (it would corrupt keep-alive)
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        headers.setdefault("X-Request-Id", f"Root=1-{secrets.token_hex(4)}")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head or not body:
            return
        if getattr(self, "_truncate", False):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self._drop()
            return
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.status, {"error": err.message}, headers)

    # ---------------------------------------------------------------- auth

    def _user(self) -> User | None:
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.split(" ", 1)[-1].strip()
        with self.state.lock:
            user = self.state.users.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, repo_id: str, user: User | None, *, write: bool = False, files: bool = False) -> Repo:
        """The repo if `user` may read it (and write it / download its files); Hub-like errors otherwise."""
        repo = self.state.repos.get(repo_id)
        member = repo is not None and user is not None and user.can_see_namespace(repo.namespace)
        visible = repo is not None and (not repo.private or member)
        if not visible:
            if user is None:
                # What the Hub answers for private (or missing) repos without a token.
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        assert repo is not None
        if write and not (user is not None and user.can_write_namespace(repo.namespace)):
            if user is None:
                raise HubError(401, "You must be authenticated to write to this repo.")
            raise HubError(403, f"You don't have the rights to write to {repo_id}. Use a token with write access.")
        if files and repo.gated and not (
            user is not None and (user.name in repo.granted or user.can_see_namespace(repo.namespace))
        ):
            if user is None:
                raise HubError(
                    401,
                    f"Access to model {repo_id} is restricted. You must have access to it and be authenticated to"
                    " access it. Please log in.",
                    "GatedRepo",
                )
            raise HubError(
                403,
                f"Access to model {repo_id} is restricted and you are not in the authorized list. Visit"
                f" {self.state.endpoint}/{repo_id} to ask for access.",
                "GatedRepo",
            )
        return repo

    def _commit_for(self, repo: Repo, revision: str) -> Commit:
        sha = repo.resolve(revision)
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[sha]

    # ---------------------------------------------------------------- routing

    def _route_hub(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        state = self.state
        user = self._user()
        m = None

        def match(pattern: str) -> bool:
            nonlocal m
            m = re.fullmatch(pattern, path)
            return m is not None

        with state.lock:
            if method == "GET" and match(r"/api/whoami-v2"):
                if user is None:
                    raise HubError(401, "Invalid username or password.")
                return self._json(
                    200,
                    {
                        "type": "user",
                        "name": user.name,
                        "fullname": user.name,
                        "orgs": [{"type": "org", "name": org} for org in user.orgs],
                        "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": user.role}},
                    },
                )
            if method == "GET" and match(r"/api/agent-harnesses"):
                return self._json(200, {"standardEnvVars": [], "harnesses": {}})
            if method == "POST" and match(r"/api/repos/create"):
                return self._create_repo(user, json.loads(body or b"{}"))
            if method == "POST" and match(r"/api/validate-yaml"):
                return self._validate_yaml(json.loads(body or b"{}"))
            if method == "GET" and match(rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?"):
                return self._model_info(user, unquote(m["repo"]), unquote(m["rev"] or "main"), query)
            if method == "GET" and match(rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?"):
                return self._tree(user, unquote(m["repo"]), unquote(m["rev"]), unquote(m["sub"] or ""), query)
            if method == "POST" and match(rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)"):
                return self._paths_info(user, unquote(m["repo"]), unquote(m["rev"]), body)
            if method == "GET" and match(rf"/api/models/{_REPO}/refs"):
                return self._refs(user, unquote(m["repo"]))
            if method == "POST" and match(rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)"):
                return self._create_branch(user, unquote(m["repo"]), unquote(m["branch"]), json.loads(body or b"{}"))
            if method == "POST" and match(rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)"):
                return self._preupload(user, unquote(m["repo"]), unquote(m["rev"]), json.loads(body), query)
            if method == "POST" and match(rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)"):
                return self._commit(user, unquote(m["repo"]), unquote(m["rev"]), body, query)
            if method == "POST" and match(rf"/api/models/{_REPO}/discussions"):
                return self._create_discussion(user, unquote(m["repo"]), json.loads(body or b"{}"))
            if method == "GET" and match(rf"/api/models/{_REPO}/discussions/(?P<num>\d+)"):
                return self._discussion(user, unquote(m["repo"]), int(m["num"]))
            if method == "POST" and match(rf"/{_REPO}\.git/info/lfs/objects/batch"):
                return self._lfs_batch(user, unquote(m["repo"]), json.loads(body))
            if method == "POST" and match(rf"/{_REPO}\.git/info/lfs/objects/verify"):
                return self._lfs_verify(user, unquote(m["repo"]), json.loads(body))
            if method in ("GET", "HEAD") and match(rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)"):
                return self._resolve(method, user, unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]))
        raise HubError(404, f"Not found: {method} {path}")

    def _route_cdn(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
        state = self.state
        sig = (query.get("sig") or [""])[0]
        m = re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", path)
        if method == "PUT" and m:
            with state.lock:
                pending = state.pending_uploads.get(sig)
                if pending is None or pending[1] != m["oid"]:
                    raise HubError(403, "Request has expired or signature does not match")
                repo_id, oid, size = pending
                if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
                    raise HubError(400, "Uploaded content does not match the announced sha256/size")
                state.content[oid] = body
                state.repos[repo_id].lfs_objects.add(oid)
                del state.pending_uploads[sig]
                state.stats["lfs_uploads"] += 1
                state.stats["lfs_upload_bytes"] += len(body)
            return self._send(200, b"", {"ETag": f'"{oid[:32]}"'})
        m = re.fullmatch(r"/lfs-download/(?P<oid>[0-9a-f]{64})", path)
        if method in ("GET", "HEAD") and m:
            with state.lock:
                if state.download_sigs.get(sig) != m["oid"] or m["oid"] not in state.content:
                    raise HubError(403, "Request has expired or signature does not match")
                data = state.content[m["oid"]]
            return self._send_bytes(method, data, {"ETag": f'"{m["oid"]}"', "Content-Type": "application/octet-stream"})
        raise HubError(404, f"Not found: {method} {path}")

    # ---------------------------------------------------------------- endpoints

    def _create_repo(self, user: User | None, payload: dict[str, Any]) -> None:
        state = self.state
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo.")
        if payload.get("type") not in (None, "model"):
            raise HubError(400, "This test server only hosts model repos.")
        namespace = payload.get("organization") or user.name
        repo_id = f"{namespace}/{payload['name']}"
        url = f"{state.endpoint}/{repo_id}"
        if not user.can_write_namespace(namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
        if repo_id in state.repos:
            return self._json(409, {"error": "You already created this model repo", "url": url})
        private = payload.get("visibility") == "private" or payload.get("private") is True
        state.create_repo(repo_id, private=private, author=user.name)
        return self._json(200, {"url": url, "name": repo_id, "id": secrets.token_hex(12)})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        content = payload.get("content", "")
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end == -1:
                return self._json(400, {"errors": [{"message": "Unterminated YAML header"}], "warnings": []})
            try:
                meta = yaml.safe_load(content[3:end])
            except yaml.YAMLError as exc:
                return self._json(400, {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []})
            if meta is not None and not isinstance(meta, dict):
                return self._json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def _model_info(self, user: User | None, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, user)
        commit = self._commit_for(repo, revision)
        blobs = (query.get("blobs") or ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            entry = commit.files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {
                        "size": entry.size,
                        "sha256": entry.sha256,
                        "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sibling)
        card_data = None
        readme = commit.files.get("README.md")
        if readme is not None:
            text = self.state.content[readme.sha256].decode(errors="replace")
            if text.startswith("---") and (end := text.find("\n---", 3)) != -1:
                try:
                    card_data = yaml.safe_load(text[3:end])
                except yaml.YAMLError:
                    card_data = None
        info = {
            "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "modelId": repo_id,
            "author": repo.namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if isinstance(card_data, dict):
            info["cardData"] = card_data
        self._json(200, info)

    def _tree_entries(self, commit: Commit, sub: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""
        files = [e for p, e in sorted(commit.files.items()) if p.startswith(prefix)]
        if prefix and not files:
            raise HubError(404, f"{sub} does not exist on {commit.oid}", "EntryNotFound")
        dirs: dict[str, list[str]] = {}
        entries: list[dict[str, Any]] = []
        for entry in files:
            rel = entry.path[len(prefix) :]
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                dirs.setdefault(prefix + "/".join(parts[:depth]), []).append(entry.oid)
            if recursive or len(parts) == 1:
                entries.append(entry.tree_json())
        for dpath in sorted(dirs):
            if recursive or "/" not in dpath[len(prefix) :]:
                tree_id = hashlib.sha1("".join(sorted(dirs[dpath])).encode()).hexdigest()
                entries.append({"type": "directory", "oid": tree_id, "size": 0, "path": dpath})
        return entries

    def _tree(self, user: User | None, repo_id: str, revision: str, sub: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, user)
        commit = self._commit_for(repo, revision)
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        self._json(200, self._tree_entries(commit, sub, recursive))

    def _paths_info(self, user: User | None, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._repo(repo_id, user)
        commit = self._commit_for(repo, revision)
        paths = parse_qs(body.decode()).get("paths", [])
        out = []
        for path in paths:
            if path in commit.files:
                out.append(commit.files[path].tree_json())
            elif any(p.startswith(path.rstrip("/") + "/") for p in commit.files):
                tree_id = hashlib.sha1(path.encode() + commit.oid.encode()).hexdigest()
                out.append({"type": "directory", "oid": tree_id, "size": 0, "path": path})
        self._json(200, out)

    def _refs(self, user: User | None, repo_id: str) -> None:
        repo = self._repo(repo_id, user)
        self._json(
            200,
            {
                "branches": [
                    {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in repo.branches.items()
                ],
                "converts": [],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()],
                "pullRequests": [{"name": r, "ref": r, "targetCommit": s} for r, s in repo.pr_refs.items()],
            },
        )

    def _create_branch(self, user: User | None, repo_id: str, branch: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, user, write=True)
        if branch.startswith("refs/") or not re.fullmatch(r"[\w.\-/]+", branch):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        if branch in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{branch}")
        start = self._commit_for(repo, payload.get("startingPoint") or "main")
        repo.branches[branch] = start.oid
        self._json(200, {})

    def _preupload(
        self, user: User | None, repo_id: str, revision: str, payload: dict[str, Any], query: dict[str, list[str]]
    ) -> None:
        repo = self._repo(repo_id, user, write=True)
        commit = self._commit_for(repo, revision)
        ignore = payload.get("gitIgnore")
        if ignore is None and ".gitignore" in commit.files:
            ignore = self.state.content[commit.files[".gitignore"].sha256].decode(errors="replace")
        ignore_patterns = [ln.strip() for ln in (ignore or "").splitlines() if ln.strip() and not ln.startswith("#")]
        out = []
        for item in payload.get("files", []):
            path = item["path"]
            sample = base64.b64decode(item.get("sample", ""))
            mode = self.state._upload_mode(repo, commit.oid, path, int(item["size"]), sample)
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if existing.lfs else existing.oid
            should_ignore = any(
                fnmatch.fnmatchcase(path, p) or fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], p) for p in ignore_patterns
            )
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": should_ignore, "oid": oid})
        self._json(200, {"files": out, "commitOid": commit.oid})

    def _commit(self, user: User | None, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]]) -> None:
        state = self.state
        repo = self._repo(repo_id, user, write=True)
        assert user is not None
        create_pr = (query.get("create_pr") or ["0"])[0] in ("1", "true")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of the commit payload must be a header")
        header = lines[0]["value"]
        base = self._commit_for(repo, revision)
        target = repo.writable_ref(revision)
        if target is None:
            raise HubError(400, f"Cannot commit to {revision}: not a branch or a pull request ref")
        parent_commit = header.get("parentCommit")
        if parent_commit and not base.oid.startswith(parent_commit) and not create_pr:
            raise HubError(412, f"A commit has happened since. Parent commit {parent_commit} is not {base.oid}.")
        tree = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, "Only base64 file content is supported")
                data = base64.b64decode(value["content"])
                tree[value["path"]] = state._store_file(repo, value["path"], data, lfs=False)
            elif key == "lfsFile":
                oid = value["oid"]
                if oid not in repo.lfs_objects:
                    raise HubError(400, f"LFS object {oid} for {value['path']} was not uploaded")
                size = len(state.content[oid])
                tree[value["path"]] = FileEntry(
                    value["path"], size, git_blob_sha1(lfs_pointer(oid, size)), oid, lfs=True
                )
            elif key == "deletedFile":
                if value["path"] not in tree:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                del tree[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for p in [p for p in tree if p.startswith(prefix)]:
                    del tree[p]
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        title, description = header.get("summary", ""), header.get("description", "")
        sha = state._new_commit(repo, base.oid, tree, title, description, user.name)
        response: dict[str, Any] = {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{state.endpoint}/{repo_id}/commit/{sha}",
            "hookOutput": "",
        }
        if create_pr:
            pr = self._new_pr(repo, user, header.get("summary", ""), header.get("description", ""), base_sha=base.oid)
            repo.pr_refs[pr.ref] = sha
            response["pullRequestUrl"] = f"{state.endpoint}/{repo_id}/discussions/{pr.num}"
        else:
            refs, key = target
            refs[key] = sha
        state.stats["commits"] += 1
        self._json(200, response)

    def _new_pr(self, repo: Repo, user: User, title: str, description: str, base_sha: str) -> PullRequest:
        num = max(repo.prs, default=0) + 1
        pr = PullRequest(num=num, title=title, description=description, author=user.name, created_at=_now_iso())
        repo.prs[num] = pr
        repo.pr_refs[pr.ref] = base_sha
        return pr

    def _create_discussion(self, user: User | None, repo_id: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, user)
        if user is None:
            raise HubError(401, "You must be authenticated to open a discussion.")
        if not payload.get("pullRequest"):
            raise HubError(400, "This test server only supports pull requests.")
        pr = self._new_pr(repo, user, payload.get("title", ""), payload.get("description", ""), repo.branches["main"])
        self._json(200, {"num": pr.num, "pullRequest": True})

    def _discussion(self, user: User | None, repo_id: str, num: int) -> None:
        repo = self._repo(repo_id, user)
        pr = repo.prs.get(num)
        if pr is None:
            raise HubError(404, "Discussion not found")
        self._json(
            200,
            {
                "title": pr.title,
                "num": pr.num,
                "author": {"name": pr.author},
                "createdAt": pr.created_at,
                "status": "draft",
                "repo": {"name": repo_id, "type": "model"},
                "isPullRequest": True,
                "events": [],
                "changes": {"base": f"refs/heads/{pr.base}"},
                "filesWithConflicts": [],
                "diff": "",
            },
        )

    def _lfs_batch(self, user: User | None, repo_id: str, payload: dict[str, Any]) -> None:
        state = self.state
        if payload.get("operation") != "upload":
            raise HubError(400, "This test server only implements LFS uploads (downloads go through /resolve)")
        repo = self._repo(repo_id, user, write=True)
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if oid in repo.lfs_objects:
                objects.append({"oid": oid, "size": size})  # already stored: no actions, nothing to upload
                continue
            sig = secrets.token_urlsafe(16)
            state.pending_uploads[sig] = (repo_id, oid, size)
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": {"href": f"{state.cdn_endpoint}/lfs-upload/{oid}?sig={sig}", "header": {}},
                        "verify": {"href": f"{state.endpoint}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                    },
                }
            )
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            {"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _lfs_verify(self, user: User | None, repo_id: str, payload: dict[str, Any]) -> None:
        repo = self._repo(repo_id, user, write=True)
        oid = payload.get("oid")
        if oid not in repo.lfs_objects or len(self.state.content[oid]) != int(payload.get("size", -1)):
            raise HubError(404, f"LFS object {oid} not found or of the wrong size")
        self._json(200, {"success": True})

    def _resolve(self, method: str, user: User | None, repo_id: str, revision: str, filename: str) -> None:
        state = self.state
        repo = self._repo(repo_id, user, files=True)
        commit = self._commit_for(repo, revision)
        entry = commit.files.get(filename)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes"}
        if entry.lfs:
            sig = secrets.token_urlsafe(16)
            state.download_sigs[sig] = entry.sha256
            location = f"{state.cdn_endpoint}/lfs-download/{entry.sha256}?sig={sig}"
            headers.update(
                {
                    "ETag": f'"{entry.oid}"',
                    "X-Linked-Etag": f'"{entry.sha256}"',
                    "X-Linked-Size": str(entry.size),
                    "Location": location,
                }
            )
            return self._send(302, b"", headers, head=method == "HEAD")
        headers.update({"ETag": f'"{entry.oid}"', "Content-Type": "application/octet-stream"})
        return self._send_bytes(method, state.content[entry.sha256], headers)

    def _send_bytes(self, method: str, data: bytes, headers: dict[str, str]) -> None:
        """Serve file bytes with Range support; counts downloads."""
        status, body = 200, data
        range_header = self.headers.get("Range")
        if range_header and (m := re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())):
            start = int(m[1]) if m[1] else max(len(data) - int(m[2]), 0)
            end = int(m[2]) if m[1] and m[2] else len(data) - 1
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            status, body = 206, data[start : end + 1]
            headers = {**headers, "Content-Range": f"bytes {start}-{start + len(body) - 1}/{len(data)}"}
        if method == "HEAD":
            return self._send(status, b"", {**headers, "Content-Length": str(len(body))}, head=True)
        with self.state.lock:
            self.state.stats["downloads"] += 1
            self.state.stats["download_bytes"] += len(body)
        return self._send(status, body, headers)

