"""A fake Hugging Face Hub for tests: the part of the Hub's file API that ``huggingface_hub`` uses to
download dataset files, served over real HTTP on a loopback port.

    with FakeHub() as hub:
        hub.add_file("default/sample", "testing/testing.jsonl", '{"prompt": "hi"}\\n')
        load_rows("hf://datasets/default/sample/testing/testing.jsonl", settings=..., hf_endpoint=hub.url)

Endpoints (dataset repositories only; revision ``main`` or the repository's commit hash):

- ``HEAD/GET /datasets/{ns}/{repo}/resolve/{revision}/{path}``: the file, with ``X-Repo-Commit``,
  ``ETag`` (the git blob sha of the content) and ``Content-Length``; errors carry ``X-Error-Code``
  (``RepoNotFound`` with 401, ``RevisionNotFound``/``EntryNotFound`` with 404) as the Hub does.
- ``GET /api/datasets/{ns}/{repo}/tree/{revision}[/{path}]?recursive=...``: the file listing
  (answers 404 when ``tree_api`` is false, like an endpoint without it).
- ``GET /api/datasets/{ns}/{repo}[/revision/{revision}]``: the repository info with ``sha`` and ``siblings``.

``add_redirect(repo_id, path, url)`` makes a file's ``resolve`` answer 302 to ``url``, with the file's
metadata on the redirect itself, as the Hub answers for a file kept on its CDN.

``requests`` records ``(method, path)`` of every request; ``downloads`` counts file GETs.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.serving import BackgroundServer, free_port


def _blob_sha(content: bytes) -> str:
    """The git blob sha1 of ``content``, which is what the Hub sends as the ETag of a small file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """A Hub-compatible file server for dataset repositories, running in a background thread."""

    def __init__(self, *, tree_api: bool = True) -> None:
        self.tree_api = tree_api
        self.repos: dict[str, dict[str, bytes]] = {}
        self.redirects: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._server: BackgroundServer | None = None

    # ---- content -------------------------------------------------------------------------

    def add_file(self, repo_id: str, path: str, content: bytes | str) -> None:
        """Add (or replace) a file in dataset repository ``repo_id`` (``namespace/name``)."""
        data = content.encode() if isinstance(content, str) else content
        with self._lock:
            self.repos.setdefault(repo_id, {})[path.strip("/")] = data

    def add_redirect(self, repo_id: str, path: str, url: str) -> None:
        """Serve ``path`` of ``repo_id`` (which must hold it) as a redirect to ``url``."""
        with self._lock:
            self.redirects[(repo_id, path.strip("/"))] = url

    def commit(self, repo_id: str) -> str:
        """The repository's current commit hash: it changes whenever a file changes."""
        digest = hashlib.sha1()
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + b"\0" + _blob_sha(data).encode())
        return digest.hexdigest()

    @property
    def downloads(self) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and "/resolve/" in path)

    # ---- HTTP ----------------------------------------------------------------------------

    def _repo(self, request: Request) -> tuple[str, dict[str, bytes] | None]:
        repo_id = f"{request.path_params['ns']}/{request.path_params['repo']}"
        return repo_id, self.repos.get(repo_id)

    def _revision_ok(self, repo_id: str, revision: str) -> bool:
        return revision in ("main", self.commit(repo_id))

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status, headers={"X-Error-Code": code, **(headers or {})})

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append((request.method, request.url.path))

    async def _resolve(self, request: Request) -> Response:
        self._record(request)
        repo_id, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
        revision = request.path_params["revision"]
        if not self._revision_ok(repo_id, revision):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        commit = self.commit(repo_id)
        path = request.path_params["path"]
        data = repo.get(path)
        if data is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "ETag": f'"{_blob_sha(data)}"'}
        elsewhere = self.redirects.get((repo_id, path))
        if elsewhere is not None:
            linked = {
                "X-Linked-Etag": headers["ETag"],
                "X-Linked-Size": str(len(data)),
                "Location": elsewhere,
            }
            return Response(b"", 302, headers={**headers, **linked})
        return Response(data, 200, headers=headers, media_type="application/octet-stream")

    async def _tree(self, request: Request) -> Response:
        self._record(request)
        if not self.tree_api:
            return JSONResponse({"error": "Not Found"}, 404)
        repo_id, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
        if not self._revision_ok(repo_id, request.path_params["revision"]):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        base = request.path_params.get("path", "").strip("/")
        prefix = f"{base}/" if base else ""
        recursive = request.query_params.get("recursive", "false").lower() == "true"
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(repo.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                if recursive or depth == 1:
                    folder = prefix + "/".join(parts[:depth])
                    entries.setdefault(
                        folder,
                        {"type": "directory", "oid": _blob_sha(folder.encode()), "size": 0, "path": folder},
                    )
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "oid": _blob_sha(data), "size": len(data), "path": path}
        if base and not entries:
            return self._error(404, "EntryNotFound", f"{base} does not exist")
        return JSONResponse(list(entries.values()))

    async def _info(self, request: Request) -> Response:
        self._record(request)
        repo_id, repo = self._repo(request)
        if repo is None:
            return self._error(401, "RepoNotFound", f"Repository {repo_id} not found")
        revision = request.path_params.get("revision", "main")
        if not self._revision_ok(repo_id, revision):
            return self._error(404, "RevisionNotFound", "Invalid rev id")
        siblings = [{"rfilename": path} for path in sorted(repo)]
        return JSONResponse(
            {
                "_id": repo_id,
                "id": repo_id,
                "sha": self.commit(repo_id),
                "private": False,
                "siblings": siblings,
                "tags": [],
            }
        )

    def _app(self) -> Starlette:
        repo = "{ns}/{repo}"
        return Starlette(
            routes=[
                Route(
                    f"/datasets/{repo}/resolve/{{revision}}/{{path:path}}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
                Route(f"/api/datasets/{repo}/tree/{{revision}}", self._tree),
                Route(f"/api/datasets/{repo}/tree/{{revision}}/{{path:path}}", self._tree),
                Route(f"/api/datasets/{repo}", self._info),
                Route(f"/api/datasets/{repo}/revision/{{revision}}", self._info),
            ]
        )

    # ---- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeHub:
        self._server = BackgroundServer(self._app(), self.port, name="fake hub").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
