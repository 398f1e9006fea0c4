"""A small, real, Hub-compatible HTTP server for tests, and the `local_hub` pytest fixture.

`LocalHub` speaks enough of the huggingface.co HTTP API for the *unmocked* `huggingface_hub` client (and everything
built on it: `transformers.from_pretrained`, `ModelCard.load`, the `hf` CLI in a subprocess) to create model repos,
commit files (regular files inlined in the ndjson commit, binary / large files through the Git LFS batch API), and
read them back by branch, tag or commit sha. Only the standard library is used.

Supported endpoints (model repos only; `datasets/`, `spaces/`, ... answer 404 `RepoNotFound`):

    GET    /api/whoami-v2
    GET    /api/agent-harnesses                          (an empty registry: the CLI asks for it)
    POST   /api/repos/create                             (409 + `url` when the repo exists)
    DELETE /api/repos/delete
    POST   /api/validate-yaml                            (accepts everything: no YAML parser in the stdlib)
    GET    /api/models/{repo_id}[/revision/{rev}]        (`?blobs=true` adds size / blobId / lfs to siblings)
    GET    /api/models/{repo_id}/tree/{rev}[/{path}]     (`?recursive=true`, `?expand=true` adds lastCommit)
    POST   /api/models/{repo_id}/paths-info/{rev}
    GET    /api/models/{repo_id}/commits/{rev}           (newest first)
    GET    /api/models/{repo_id}/refs
    POST   /api/models/{repo_id}/preupload/{rev}
    POST   /api/models/{repo_id}/commit/{branch}         (ndjson: header, file, lfsFile, deletedFile, deletedFolder)
    POST   /api/models/{repo_id}/branch/{branch}         DELETE same
    POST   /api/models/{repo_id}/tag/{rev}
    HEAD   /{repo_id}/resolve/{rev}/{path}               GET same (with `Range` support)
    POST   /{repo_id}.git/info/lfs/objects/batch         (upload only)
    POST   /{repo_id}.git/info/lfs/objects/verify
    PUT    /_lfs/upload/{sha256}?size=..&sig=..          (the "pre-signed" upload URL handed out by the batch API)

Reads are public (except for private repos); writes need `Authorization: Bearer <token>`. A request carrying a wrong
token gets 401 whatever it asks for, like the real Hub.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import fnmatch
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_TOKEN = "hf_test_local_hub_token"
DEFAULT_USER = "tester"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MB

# The `.gitattributes` huggingface.co puts in every new model repo: these patterns decide which files go through LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "saved_model/**/*",
        "*.tar.*",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)


# --------------------------------------------------------------------------------------------------------------------
# Storage
# --------------------------------------------------------------------------------------------------------------------


def _now() -> str:
    """Current UTC time in the format the Hub uses (and `huggingface_hub.utils.parse_datetime` expects)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _git_blob_oid(data: bytes) -> str:
    """Git object id of a blob: what the Hub reports (and the client compares) for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git LFS pointer file git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclasses.dataclass
class FileEntry:
    """One file of a commit snapshot: the blob it points to (by sha256) and how git stores it."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git oid: of the content for regular files, of the LFS pointer for LFS files


@dataclasses.dataclass
class Commit:
    """A commit: metadata + the full snapshot of the repo (path -> file)."""

    id: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    files: dict[str, FileEntry]


@dataclasses.dataclass
class Repo:
    """A model repo: its commits, branches and tags."""

    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = dataclasses.field(default_factory=dict)
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)


class HubError(Exception):
    """An error answered to the client; `code` becomes the `X-Error-Code` header the client dispatches on."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


class HubStore:
    """Content-addressed blobs (`blobs/<sha256>`) + one JSON document per repo (`repos/<ns>/<name>.json`).

    State lives in memory and is written through to disk under one lock, so a store reopened on the same directory
    sees the same repos.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.repo_dir = self.root / "repos"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        for path in sorted(self.repo_dir.glob("*/*.json")):
            repo = self._load(path)
            self.repos[repo.repo_id] = repo

    # -- blobs ---------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        return self.blob_dir / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, data: bytes) -> str:
        """Store `data`, return its sha256. Written to a temp file then renamed: readers never see a partial blob."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha256)
        if not path.exists():
            tmp = path.with_name(f"{sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return sha256

    def read_blob(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    # -- repos ---------------------------------------------------------------------------------------------------

    def _load(self, path: Path) -> Repo:
        raw = json.loads(path.read_text())
        commits = {
            cid: Commit(**{**c, "files": {p: FileEntry(**f) for p, f in c["files"].items()}})
            for cid, c in raw["commits"].items()
        }
        return Repo(**{**raw, "commits": commits})

    def save(self, repo: Repo) -> None:
        path = self.repo_dir / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(repo)))
        os.replace(tmp, path)

    def delete(self, repo_id: str) -> None:
        with self.lock:
            if self.repos.pop(repo_id, None) is None:
                raise _repo_not_found(repo_id)
            (self.repo_dir / f"{repo_id}.json").unlink(missing_ok=True)

    def get(self, repo_id: str) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise _repo_not_found(repo_id)
        return repo

    def create(self, repo_id: str, *, private: bool, author: str) -> Repo:
        """Create a repo with the initial commit huggingface.co makes (a `.gitattributes` with the LFS patterns)."""
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, f"You already created this model repo: {repo_id}")
            repo = Repo(repo_id=repo_id, private=private, created_at=_now())
            data = DEFAULT_GITATTRIBUTES.encode()
            files = {".gitattributes": FileEntry(self.put_blob(data), len(data), False, _git_blob_oid(data))}
            self._add_commit(repo, "main", files, "initial commit", "", author)
            self.repos[repo_id] = repo
            self.save(repo)
            return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        """Branch, tag or full commit sha -> commit; 404 `RevisionNotFound` otherwise."""
        revision = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        cid = repo.branches.get(revision) or repo.tags.get(revision)
        if cid is None and revision in repo.commits:
            cid = revision
        if cid is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[cid]

    def history(self, repo: Repo, commit: Commit) -> list[Commit]:
        """`commit` and its first-parent ancestors, newest first."""
        out = [commit]
        while out[-1].parents:
            out.append(repo.commits[out[-1].parents[0]])
        return out

    def _add_commit(
        self, repo: Repo, branch: str, files: dict[str, FileEntry], title: str, message: str, author: str
    ) -> Commit:
        parent = repo.branches.get(branch)
        date = _now()
        tree = sorted((path, entry.oid) for path, entry in files.items())
        # A random nonce keeps two identical commits made in the same millisecond distinct, as with real git dates.
        payload = json.dumps([parent, tree, title, message, author, date, uuid.uuid4().hex])
        commit = Commit(
            id=hashlib.sha1(payload.encode()).hexdigest(),
            parents=[parent] if parent else [],
            title=title,
            message=message,
            author=author,
            date=date,
            files=files,
        )
        repo.commits[commit.id] = commit
        repo.branches[branch] = commit.id
        return commit

    def commit(
        self,
        repo_id: str,
        branch: str,
        operations: list[dict[str, Any]],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None,
    ) -> Commit:
        """Apply ndjson commit operations on top of `branch` and move the branch to the new commit."""
        with self.lock:
            repo = self.get(repo_id)
            if branch not in repo.branches:
                if branch in repo.commits or branch in repo.tags:
                    raise HubError(400, f"Can only commit to a branch, not to '{branch}'")
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            if parent_commit is not None and not head.id.startswith(parent_commit):
                raise HubError(412, f"A commit has happened since: '{branch}' is at {head.id}, not {parent_commit}")
            files = dict(head.files)
            for op in operations:
                key, value = op.get("key"), op.get("value") or {}
                path = str(value.get("path", "")).strip("/")
                if not path and key != "deletedFolder":
                    raise HubError(400, f"Missing path in commit operation {key}")
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                    try:
                        data = base64.b64decode(value["content"], validate=True)
                    except (KeyError, binascii.Error) as e:
                        raise HubError(400, f"Invalid base64 content for {path}: {e}") from None
                    files[path] = FileEntry(self.put_blob(data), len(data), False, _git_blob_oid(data))
                elif key == "lfsFile":
                    sha256 = str(value.get("oid", ""))
                    if value.get("algo", "sha256") != "sha256" or not self.has_blob(sha256, value.get("size")):
                        raise HubError(400, f"LFS file {path} (oid {sha256}) was not uploaded: use the LFS batch API")
                    size = self.blob_path(sha256).stat().st_size
                    files[path] = FileEntry(sha256, size, True, _git_blob_oid(_lfs_pointer(sha256, size)))
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = f"{path}/" if path else ""
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"Unsupported commit operation {key!r}")
            commit = self._add_commit(repo, branch, files, title, message, author)
            self.save(repo)
            return commit

    def set_ref(self, repo_id: str, kind: str, name: str, target: str | None) -> None:
        """Create (`target` = a revision) or delete (`target` None) a branch or tag."""
        with self.lock:
            repo = self.get(repo_id)
            refs = repo.branches if kind == "branch" else repo.tags
            if target is None:
                if name not in refs:
                    raise HubError(404, f"Invalid rev id: {name}", "RevisionNotFound")
                if kind == "branch" and name == "main":
                    raise HubError(403, "Cannot delete the default branch")
                del refs[name]
            else:
                if name in refs:
                    raise HubError(409, f"Reference already exists: {name}")
                refs[name] = self.resolve(repo, target).id
            self.save(repo)


# --------------------------------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: what tests inspect to see how the client talked to the Hub."""

    method: str
    path: str  # URL-decoded, without the query string
    query: dict[str, list[str]]
    authorized: bool  # carried the server's token as `Authorization: Bearer ...`
    status: int


@dataclasses.dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    length: int | None = None  # Content-Length when it is not len(body): answers to HEAD


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    timeout = 60  # an idle keep-alive connection frees its thread after this long
    server: _Server

    def do_GET(self) -> None:  # http.server dispatches on `do_<METHOD>`
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the hub keeps its own log in `LocalHub.requests`; stderr noise would drown test output

    def _read_body(self) -> bytes:
        # The client streams LFS uploads from file objects, which may come chunked: http.server does not decode that.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self._read_body()
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        authorized = token is not None and hmac.compare_digest(token, hub.token)
        try:
            if token is not None and not authorized:
                raise HubError(401, "Invalid credentials in Authorization header")
            response = hub._route(self.command, url.path, query, body, dict(self.headers.items()), authorized)
        except json.JSONDecodeError as e:
            response = _json({"error": f"Malformed JSON body: {e}"}, 400)
        except HubError as e:
            headers = {"X-Error-Message": e.message, **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            response = _json({"error": e.message}, e.status, headers)
        except Exception as e:  # a bug in the server: answer 500 with the reason rather than dropping the connection
            response = _json({"error": f"LocalHub internal error: {type(e).__name__}: {e}"}, 500)
        hub._record(RequestRecord(self.command, unquote(url.path), query, authorized, response.status))
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        length = len(response.body) if response.length is None else response.length
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LocalHub


class LocalHub:
    """A Hub-compatible server over a `HubStore`, run in a background thread on 127.0.0.1.

    Usage: `with LocalHub(tmp_path, token="hf_x") as hub: HfApi(endpoint=hub.url, token=hub.token)...`.
    The `local_hub` fixture does that and also points every client (in-process and subprocesses) at it.
    """

    def __init__(self, storage_dir: str | os.PathLike, *, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER):
        self.storage_dir = Path(storage_dir)
        self.store = HubStore(self.storage_dir)
        self.token = token
        self.user = user
        self.requests: list[RequestRecord] = []
        self.hf_home: Path | None = None  # the fresh HF_HOME the `local_hub` fixture points clients at
        self._log_lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)  # signs the LFS upload URLs, like S3 pre-signed URLs
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL, e.g. `http://127.0.0.1:54321` (what `HF_ENDPOINT` should be)."""
        if self._server is None:
            raise RuntimeError("LocalHub is not running: call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        """Listen on a free port of 127.0.0.1 and serve from a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        # A short poll interval makes `stop()` quick: function-scoped fixtures start and stop a server per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._server = self._thread = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ---------------------------------------------------------------------------------------

    def api(self, token: str | bool | None = None) -> HfApi:
        """An `HfApi` bound to this hub, authenticated with the hub's token unless `token` says otherwise."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.token if token is None else token)

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.requests.append(record)

    def requests_to(self, method: str, path_contains: str = "") -> list[RequestRecord]:
        """Logged requests with this method whose decoded path contains `path_contains`."""
        with self._log_lock:
            return [r for r in self.requests if r.method == method and path_contains in r.path]

    def head(self, repo_id: str, branch: str = "main") -> str:
        """Commit sha `branch` of `repo_id` points at."""
        with self.store.lock:
            return self.store.get(repo_id).branches[branch]

    # -- routing -------------------------------------------------------------------------------------------------

    def _route(
        self,
        method: str,
        raw_path: str,
        query: dict[str, list[str]],
        body: bytes,
        headers: dict[str, str],
        authorized: bool,
    ) -> _Response:
        # Split before decoding: revisions and tree paths arrive percent-encoded with `/` -> `%2F`.
        parts = [unquote(p) for p in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        if parts[:1] == ["api"]:
            return self._route_api(method, parts[1:], query, body, authorized)
        if parts[:2] == ["_lfs", "upload"] and len(parts) == 3 and method == "PUT":
            return self._lfs_put(parts[2], query, body)
        if len(parts) >= 5 and parts[1].endswith(".git") and parts[2:4] == ["info", "lfs"]:
            return self._lfs_api(method, f"{parts[0]}/{parts[1][: -len('.git')]}", parts[4:], body, authorized)
        if method in ("GET", "HEAD") and "resolve" in parts[1:3]:
            at = parts.index("resolve", 1)
            if parts[0] in ("datasets", "spaces", "kernels"):  # only model repos live here
                raise _repo_not_found("/".join(parts[:at]))
            if len(parts) < at + 3:
                raise HubError(400, "Expected /{repo_id}/resolve/{revision}/{path}")
            repo_id, revision, path = "/".join(parts[:at]), parts[at + 1], "/".join(parts[at + 2 :])
            return self._resolve(method, repo_id, revision, path, headers, authorized)
        raise HubError(404, f"Not found: {method} {raw_path}")

    def _route_api(
        self, method: str, parts: list[str], query: dict[str, list[str]], body: bytes, authorized: bool
    ) -> _Response:
        if parts == ["whoami-v2"] and method == "GET":
            if not authorized:
                raise HubError(401, "Invalid username or password.")
            return _json(
                {
                    "type": "user",
                    "id": "0",
                    "name": self.user,
                    "fullname": self.user.title(),
                    "email": f"{self.user}@localhost",
                    "orgs": [],
                    "isPro": False,
                    "auth": {"type": "access_token", "accessToken": {"displayName": "local-hub", "role": "write"}},
                }
            )
        if parts == ["validate-yaml"] and method == "POST":
            return _json({"errors": [], "warnings": []})
        if parts == ["agent-harnesses"] and method == "GET":  # the CLI's agent detection registry: none here
            return _json({"standardEnvVars": [], "harnesses": {}})
        if parts[:1] == ["repos"] and len(parts) == 2:
            self._require_auth(authorized)
            payload = json.loads(body or b"{}")
            repo_type = payload.get("type") or "model"
            repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
            if method == "POST" and parts[1] == "create":
                if repo_type != "model":
                    raise HubError(400, f"LocalHub only hosts model repos, not {repo_type!r}")
                private = payload.get("visibility") == "private" or bool(payload.get("private"))
                try:
                    self.store.create(repo_id, private=private, author=self.user)
                except HubError as e:  # the client reads `url` from the 409 body when `exist_ok=True`
                    if e.status == 409:
                        return _json({"error": e.message, "url": f"{self.url}/{repo_id}"}, 409)
                    raise
                return _json({"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id})
            if method == "DELETE" and parts[1] == "delete":
                if repo_type != "model":
                    raise _repo_not_found(repo_id)
                self.store.delete(repo_id)
                return _json({})
        if parts[:1] in (["datasets"], ["spaces"], ["kernels"]):
            raise _repo_not_found("/".join(parts[1:3]))
        if parts[:1] == ["models"] and len(parts) >= 3:
            return self._route_repo(method, f"{parts[1]}/{parts[2]}", parts[3:], query, body, authorized)
        if parts[:1] == ["models"] and len(parts) == 2:  # a namespace-less id: never created here
            raise _repo_not_found(parts[1])
        raise HubError(404, f"Not found: {method} /api/{'/'.join(parts)}")

    def _require_auth(self, authorized: bool) -> None:
        if not authorized:
            raise HubError(401, "You must be authenticated with a write token for this operation")

    def _readable_repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.store.get(repo_id)
        if repo.private and not authorized:  # the Hub hides private repos from anonymous users
            raise _repo_not_found(repo_id)
        return repo

    def _route_repo(
        self,
        method: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        body: bytes,
        authorized: bool,
    ) -> _Response:
        with self.store.lock:
            repo = self._readable_repo(repo_id, authorized)
            if method == "GET" and (not rest or rest[0] == "revision"):
                commit = self.store.resolve(repo, "/".join(rest[1:]) if rest else "main")
                return _json(self._model_info(repo, commit, blobs=_flag(query, "blobs")))
            if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                commit = self.store.resolve(repo, rest[1])
                path = "/".join(rest[2:]).strip("/")
                return _json(self._tree(repo, commit, path, _flag(query, "recursive"), _flag(query, "expand")))
            if method == "POST" and rest[:1] == ["paths-info"] and len(rest) == 2:
                commit = self.store.resolve(repo, rest[1])
                form = parse_qs(body.decode())
                return _json(self._paths_info(repo, commit, form.get("paths", []), _flag(form, "expand")))
            if method == "GET" and rest[:1] == ["commits"] and len(rest) == 2:
                commit = self.store.resolve(repo, rest[1])
                formatted = "formatted" in query.get("expand[]", [])
                return _json([self._commit_json(c, formatted=formatted) for c in self.store.history(repo, commit)])
            if method == "GET" and rest == ["refs"]:
                return _json(
                    {
                        "branches": [_ref("heads", n, c) for n, c in sorted(repo.branches.items())],
                        "tags": [_ref("tags", n, c) for n, c in sorted(repo.tags.items())],
                        "converts": [],
                        "pullRequests": [],
                    }
                )
        # Writes from here on.
        self._require_auth(authorized)
        if method == "POST" and rest[:1] == ["preupload"] and len(rest) == 2:
            return self._preupload(repo_id, rest[1], json.loads(body or b"{}"))
        if method == "POST" and rest[:1] == ["commit"] and len(rest) == 2:
            if _flag(query, "create_pr"):
                raise HubError(400, "LocalHub does not support pull requests (create_pr)")
            return self._commit(repo_id, rest[1], body)
        if rest[:1] == ["branch"] and len(rest) == 2 and method in ("POST", "DELETE"):
            start = (json.loads(body or b"{}").get("startingPoint") or "main") if method == "POST" else None
            self.store.set_ref(repo_id, "branch", rest[1], start)
            return _json({})
        if rest[:1] == ["tag"] and len(rest) == 2 and method == "POST":
            self.store.set_ref(repo_id, "tag", json.loads(body or b"{}")["tag"], rest[1])
            return _json({})
        raise HubError(404, f"Not found: {method} /api/models/{repo_id}/{'/'.join(rest)}")

    # -- read endpoints ------------------------------------------------------------------------------------------

    def _model_info(self, repo: Repo, commit: Commit, *, blobs: bool) -> dict[str, Any]:
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    pointer = _lfs_pointer(entry.sha256, entry.size)
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": len(pointer)}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.id,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        # Like the Hub, surface the architecture from config.json (transformers-style repos).
        if "config.json" in commit.files:
            try:
                config = json.loads(self.store.read_blob(commit.files["config.json"].sha256))
                info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
            except (ValueError, OSError):
                pass
        return info

    def _file_json(self, path: str, entry: FileEntry) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
        if entry.lfs:
            pointer = _lfs_pointer(entry.sha256, entry.size)
            out["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(pointer)}
        return out

    def _folder_json(self, commit: Commit, path: str) -> dict[str, Any]:
        prefix = path + "/"
        children = sorted((p, e.oid) for p, e in commit.files.items() if p.startswith(prefix))
        return {"type": "directory", "oid": hashlib.sha1(json.dumps(children).encode()).hexdigest(), "path": path}

    def _last_commits(self, repo: Repo, commit: Commit, paths: list[str]) -> dict[str, Commit]:
        """For each file or folder path, the newest commit (in `commit`'s history) that changed it."""

        def state(c: Commit, path: str) -> Any:
            return sorted((p, e.oid) for p, e in c.files.items() if p == path or p.startswith(path + "/"))

        history = self.store.history(repo, commit)
        out = {}
        for path in paths:
            for newer, older in zip(history, history[1:] + [None]):
                if older is None or state(newer, path) != state(older, path):
                    out[path] = newer
                    break
        return out

    def _with_last_commit(self, repo: Repo, commit: Commit, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        last = self._last_commits(repo, commit, [e["path"] for e in entries])
        for entry in entries:
            c = last[entry["path"]]
            entry["lastCommit"] = {"id": c.id, "title": c.title, "date": c.date}
        return entries

    def _tree(self, repo: Repo, commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        if path in commit.files:  # like the Hub: a tree listing is for folders
            raise HubError(404, f"{path} is a file, not a folder", "EntryNotFound", {"X-Repo-Commit": commit.id})
        prefix = f"{path}/" if path else ""
        below = sorted(p for p in commit.files if p.startswith(prefix))
        if path and not below:
            raise HubError(404, f"Path {path} not found at {commit.id}", "EntryNotFound", {"X-Repo-Commit": commit.id})
        folders: set[str] = set()
        files: list[str] = []
        for p in below:
            rel = p[len(prefix) :].split("/")
            if recursive:
                folders.update(prefix + "/".join(rel[:i]) for i in range(1, len(rel)))
                files.append(p)
            elif len(rel) > 1:
                folders.add(prefix + rel[0])
            else:
                files.append(p)
        entries = [self._folder_json(commit, f) for f in sorted(folders)]
        entries += [self._file_json(p, commit.files[p]) for p in files]
        return self._with_last_commit(repo, commit, entries) if expand else entries

    def _paths_info(self, repo: Repo, commit: Commit, paths: list[str], expand: bool) -> list[dict[str, Any]]:
        entries = []
        for path in (p.strip("/") for p in paths):
            if path in commit.files:
                entries.append(self._file_json(path, commit.files[path]))
            elif any(p.startswith(path + "/") for p in commit.files):
                entries.append(self._folder_json(commit, path))
        return self._with_last_commit(repo, commit, entries) if expand else entries

    def _commit_json(self, commit: Commit, *, formatted: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": commit.id,
            "title": commit.title,
            "message": commit.message,
            "date": commit.date,
            "authors": [{"user": commit.author, "avatar": None}],
        }
        if formatted:
            out["formatted"] = {"title": commit.title, "message": commit.message}
        return out

    def _resolve(
        self, method: str, repo_id: str, revision: str, path: str, headers: dict[str, str], authorized: bool
    ) -> _Response:
        with self.store.lock:
            repo = self._readable_repo(repo_id, authorized)
            commit = self.store.resolve(repo, revision)
            entry = commit.files.get(path)
        # The client caches "this file does not exist at commit X": the 404 must name the commit.
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.id})
        out_headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{entry.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs:
            # huggingface.co answers LFS files with a redirect to a CDN carrying these headers; the client names the
            # cached blob after the linked etag (the sha256). Serving the bytes directly is equally valid for it.
            out_headers["X-Linked-Etag"] = f'"{entry.sha256}"'
            out_headers["X-Linked-Size"] = str(entry.size)
        size, start, end, status = entry.size, 0, entry.size - 1, 200
        range_header = headers.get("Range") or headers.get("range")
        if range_header and range_header.startswith("bytes=") and "," not in range_header:
            first, _, last = range_header[len("bytes=") :].partition("-")
            start = int(first) if first else max(size - int(last), 0)
            end = min(int(last), size - 1) if first and last else size - 1
            if start >= size > 0:
                content_range = {"Content-Range": f"bytes */{size}"}
                raise HubError(416, f"Range not satisfiable: {range_header}", headers=content_range)
            out_headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        if method == "HEAD":  # metadata only: no need to read the blob
            return _Response(status, b"", out_headers, length=max(end - start + 1, 0))
        with open(self.store.blob_path(entry.sha256), "rb") as f:
            f.seek(start)
            return _Response(status, f.read(max(end - start + 1, 0)), out_headers)

    # -- write endpoints -----------------------------------------------------------------------------------------

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return []
        lines = self.store.read_blob(entry.sha256).decode(errors="replace").splitlines()
        return [line.split()[0] for line in lines if "filter=lfs" in line.split()[1:]]

    def _preupload(self, repo_id: str, revision: str, payload: dict[str, Any]) -> _Response:
        with self.store.lock:
            repo = self.store.get(repo_id)
            commit = self.store.resolve(repo, revision)
            patterns = self._lfs_patterns(commit)
            files = []
            for item in payload.get("files", []):
                path = item["path"]
                sample = base64.b64decode(item.get("sample", ""))
                name = path.rsplit("/", 1)[-1]
                # As on the Hub: LFS if .gitattributes says so, if the file is big, or if it looks binary.
                lfs = (
                    any(fnmatch.fnmatch(path if "/" in pattern else name, pattern) for pattern in patterns)
                    or item.get("size", 0) > LFS_SIZE_THRESHOLD
                    or b"\0" in sample
                )
                existing = commit.files.get(path)
                # The client skips unchanged files when `oid` equals its own: sha256 for LFS, git sha1 otherwise.
                oid = None
                if existing is not None and existing.lfs == lfs:
                    oid = existing.sha256 if lfs else existing.oid
                mode = "lfs" if lfs else "regular"
                files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json({"files": files, "commitOid": commit.id})

    def _commit(self, repo_id: str, branch: str, body: bytes) -> _Response:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first ndjson line of a commit must be its header")
        header = lines[0]["value"]
        commit = self.store.commit(
            repo_id,
            branch,
            lines[1:],
            title=header.get("summary") or "Update",
            message=header.get("description") or "",
            author=self.user,
            parent_commit=header.get("parentCommit"),
        )
        return _json(
            {
                "success": True,
                "commitOid": commit.id,
                "commitUrl": f"{self.url}/{repo_id}/commit/{commit.id}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _upload_signature(self, oid: str, size: int) -> str:
        return hmac.new(self._signing_key, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    def _lfs_api(self, method: str, repo_id: str, rest: list[str], body: bytes, authorized: bool) -> _Response:
        lfs_headers = {"Content-Type": "application/vnd.git-lfs+json"}
        with self.store.lock:
            self._readable_repo(repo_id, authorized)
        self._require_auth(authorized)
        payload = json.loads(body or b"{}")
        if method == "POST" and rest == ["objects", "batch"]:
            if payload.get("operation") != "upload":
                raise HubError(400, "LocalHub's LFS batch API only supports the 'upload' operation")
            objects = []
            for obj in payload.get("objects", []):
                oid, size = str(obj["oid"]), int(obj["size"])
                out: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if not self.store.has_blob(oid, size):  # no `actions` means "already uploaded": the client skips it
                    href = f"{self.url}/_lfs/upload/{oid}?size={size}&sig={self._upload_signature(oid, size)}"
                    out["actions"] = {
                        "upload": {"href": href, "header": {}},
                        "verify": {"href": f"{self.url}/{repo_id}.git/info/lfs/objects/verify", "header": {}},
                    }
                objects.append(out)
            return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, headers=lfs_headers)
        if method == "POST" and rest == ["objects", "verify"]:
            if not self.store.has_blob(str(payload.get("oid")), payload.get("size")):
                raise HubError(404, f"LFS object {payload.get('oid')} not found")
            return _json({"success": True}, headers=lfs_headers)
        raise HubError(404, f"Not found: {method} /{repo_id}.git/info/lfs/{'/'.join(rest)}")

    def _lfs_put(self, oid: str, query: dict[str, list[str]], body: bytes) -> _Response:
        # Authorised by the URL's signature, not by a token: the client sends no Authorization header here.
        size = int(query.get("size", ["-1"])[0])
        if not hmac.compare_digest(query.get("sig", [""])[0], self._upload_signature(oid, size)):
            raise HubError(403, "Invalid or missing upload signature")
        if len(body) != size or hashlib.sha256(body).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {size}")
        self.store.put_blob(body)
        return _Response(200)


def _ref(kind: str, name: str, commit_id: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit_id}


def _flag(fields: dict[str, list[str]], name: str) -> bool:
    """A boolean query / form field as the client encodes it (`true`, `True`, `1`)."""
    return fields.get(name, ["false"])[-1].lower() in ("1", "true")


# --------------------------------------------------------------------------------------------------------------------
# Fixture
# --------------------------------------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return (parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}[parts.scheme])


def point_clients_at(hub: LocalHub, hf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `huggingface_hub` / `transformers` (this process and child processes) use `hub` and a fresh cache."""
    hf_home.mkdir(parents=True, exist_ok=True)
    cache = hf_home / "hub"
    # Child processes read these at import time.
    for name, value in {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_DISABLE_XET": "1",  # otherwise uploads/downloads go to Xet storage, which this server does not speak
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",  # the CLI would query PyPI
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # quieter child processes (this process keeps its setting)
        "HF_HUB_OFFLINE": "0",
        "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
        "no_proxy": ",".join(filter(None, [os.environ.get("no_proxy"), "127.0.0.1", "localhost"])),
    }.items():
        monkeypatch.setenv(name, value)
    unset = [
        *["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN"],  # no token
        *["HUGGINGFACE_HUB_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE"],  # from HF_HOME
        "TRANSFORMERS_CACHE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_CO_STAGING",  # staging mode would override HF_ENDPOINT
    ]
    for name in unset:
        monkeypatch.delenv(name, raising=False)

    # This process: huggingface_hub read all of the above into module constants at import.
    import huggingface_hub.hf_api as hf_api_module
    from huggingface_hub import constants
    from huggingface_hub.utils import _http, close_session

    for name, value in {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": constants.HF_URL_HOSTS | {"127.0.0.1"},
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(hf_home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(hf_home / "assets"),
        "HF_XET_CACHE": str(hf_home / "xet"),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(hf_home / ".check_for_update_done"),
        "AGENT_HARNESSES_PATH": str(hf_home / ".agent_harnesses.json"),
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HUB_OFFLINE": False,
    }.items():
        monkeypatch.setattr(constants, name, value, raising=False)
    # Objects and modules that copied a constant when they were created / imported.
    # The module-level HfApi behind `huggingface_hub.upload_file` & co. was built at import.
    monkeypatch.setattr(hf_api_module.api, "endpoint", hub.url)
    monkeypatch.setattr(_http, "_HUB_ORIGINS", _http._HUB_ORIGINS | {_origin(hub.url)})
    for module, name, value in (
        ("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", str(cache)),
        ("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", str(hf_home / "assets")),
        ("huggingface_hub.utils._git_credential", "ENDPOINT", hub.url),
        ("huggingface_hub.cli.auth", "ENDPOINT", hub.url),
        ("transformers.utils.hub", "_hf_api", None),  # a lazily built HfApi that froze the endpoint it saw first
    ):
        if module in sys.modules:
            monkeypatch.setattr(sys.modules[module], name, value)
    close_session()  # a fresh HTTP client picks up the proxy settings above


@pytest.fixture
def local_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A running `LocalHub` that every Hub client of the test (in-process and subprocesses) talks to.

    Yields the hub: `local_hub.url` (= `HF_ENDPOINT`), `local_hub.token` (pass it as `token=`; no token is configured
    globally, so writes without it get 401), `local_hub.user` ("tester", the default namespace), `local_hub.requests`
    (the request log), `local_hub.storage_dir`. The Hugging Face cache (`HF_HOME`, `HF_HUB_CACHE`) is a fresh
    directory, `local_hub.hf_home`.
    """
    root = tmp_path_factory.mktemp("local-hub")  # not `tmp_path`: tests may upload their whole tmp_path
    hub = LocalHub(root / "storage").start()
    hub.hf_home = root / "hf-home"
    try:
        point_clients_at(hub, hub.hf_home, monkeypatch)
        yield hub
    finally:
        hub.stop()
        from huggingface_hub.utils import close_session

        close_session()  # drop keep-alive connections to the stopped server
        hub_module = sys.modules.get("transformers.utils.hub")
        if hub_module is not None:  # transformers imported during the test: do not leak an HfApi bound to our URL
            hub_module._hf_api = None  # monkeypatch restores the pre-test value afterwards if there was one
