"""A tiny Hugging Face Hub stand-in for tests: stdlib http.server on 127.0.0.1, state in memory.

It answers just the endpoints huggingface_hub 2.4 uses to create a repo, upload a folder in one
commit (every file "regular", so no LFS / Xet), create a branch, read repo info and download
files, with the Hub's own error headers (X-Error-Code) so the client raises its own exceptions.
Private repos answer 401 RepoNotFound to anyone but their owner, like the real Hub. Tokens are
checked but never logged: the log keeps method, path and status only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class Repo:
    owner: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


def _sha(*parts: bytes) -> str:
    h = hashlib.sha1()
    for p in parts:
        h.update(p)
    return h.hexdigest()


class HubServer:
    """Start with `with HubServer(tokens={"hf_x": "alice"}) as hub:` and point HF_ENDPOINT at hub.url."""

    def __init__(self, tokens: dict[str, str] | None = None, port: int = 0) -> None:
        self.tokens = dict(tokens or {})
        self.repos: dict[str, Repo] = {}
        self.log: list[str] = []
        self.closed = False
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True  # kept-alive connections get dropped too, as if the network went away
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- state changes ------------------------------------------------------------------
    def create_repo(self, repo_id: str, owner: str, private: bool) -> Repo:
        with self.lock:
            repo = Repo(owner=owner, private=private)
            files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            sha = _sha(repo_id.encode(), b"initial", str(time.time_ns()).encode())
            repo.commits[sha] = files
            repo.branches["main"] = sha
            self.repos[repo_id] = repo
            return repo

    def commit(self, repo: Repo, branch: str, changes: dict[str, bytes | None], message: str) -> str:
        with self.lock:
            files = dict(repo.commits[repo.branches[branch]])
            for path, content in changes.items():
                if content is None:
                    files.pop(path, None)
                else:
                    files[path] = content
            sha = _sha(repo.branches[branch].encode(), message.encode(), str(time.time_ns()).encode(),
                       *(p.encode() + c for p, c in sorted(files.items())))
            repo.commits[sha] = files
            repo.branches[branch] = sha
            return sha


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args) -> None:  # keep stderr quiet; hub.log holds the calls
            pass

        # ---- helpers ----------------------------------------------------------------------
        def _user(self) -> tuple[str | None, bool]:
            """(user name, bad_token): no header -> (None, False); unknown token -> (None, True)."""
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return None, False
            user = hub.tokens.get(auth[len("Bearer "):])
            return user, user is None

        def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            hub.log.append(f"{self.command} {urlsplit(self.path).path} {status}")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _error(self, status: int, code: str | None, message: str) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._json(status, {"error": message}, headers)

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _repo(self, repo_id: str, write: bool = False) -> Repo | None:
            """The repo if this caller may see (and, with write, change) it; else sends the error."""
            user, bad_token = self._user()
            if bad_token:
                self._error(401, None, "Invalid credentials in Authorization header")
                return None
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and user != repo.owner):
                self._error(401 if user is None else 404, "RepoNotFound", "Repository not found")
                return None
            if write and user != repo.owner:
                self._error(403 if user else 401, None, "You don't have the rights to write to this repo")
                return None
            return repo

        def _info(self, repo_id: str, repo: Repo, sha: str) -> dict:
            return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
                    "author": repo.owner, "tags": [], "downloads": 0, "likes": 0,
                    "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(repo.commits[sha].items())]}

        # ---- routes -------------------------------------------------------------------------
        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def do_POST(self) -> None:
            self._route()

        def _route(self) -> None:
            if hub.closed:
                self.close_connection = True
                return
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            try:
                if parts[:2] == ["api", "whoami-v2"]:
                    return self._whoami()
                if parts[:3] == ["api", "repos", "create"] and self.command == "POST":
                    return self._create()
                if parts[:2] == ["api", "validate-yaml"] and self.command == "POST":
                    return self._validate_yaml()
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                    if not rest and self.command == "GET":
                        return self._model_info(repo_id, "main")
                    if rest[0] == "revision" and len(rest) >= 2:
                        return self._model_info(repo_id, "/".join(rest[1:]))
                    if rest[0] == "preupload" and self.command == "POST":
                        return self._preupload(repo_id)
                    if rest[0] == "commit" and self.command == "POST":
                        return self._commit(repo_id, "/".join(rest[1:]))
                    if rest[0] == "branch" and self.command == "POST":
                        return self._branch(repo_id, "/".join(rest[1:]))
                    if rest[0] == "tree" and len(rest) >= 2:
                        return self._tree(repo_id, rest[1])
                if len(parts) >= 5 and parts[2] == "resolve":
                    return self._resolve(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
                self._error(404, None, f"no route for {self.command} {urlsplit(self.path).path}")
            except (ValueError, KeyError, json.JSONDecodeError) as exc:
                self._error(400, "BadRequest", f"bad request: {exc}")

        def _whoami(self) -> None:
            user, _ = self._user()
            if user is None:
                return self._error(401, None, "Invalid user token")
            self._json(200, {"type": "user", "name": user, "fullname": user, "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"role": "write"}}})

        def _create(self) -> None:
            body = json.loads(self._body() or b"{}")
            user, _ = self._user()
            if user is None:
                return self._error(401, None, "You must be authenticated to create a repo")
            namespace = body.get("organization") or user
            repo_id = f"{namespace}/{body['name']}"
            if namespace != user:
                return self._error(403, None, f"You don't have the rights to create a repo under {namespace}")
            if repo_id in hub.repos:
                return self._json(409, {"error": "You already created this model repo", "url": f"{hub.url}/{repo_id}"},
                                  {"X-Error-Message": "You already created this model repo"})
            private = bool(body.get("private")) or body.get("visibility") in ("private", "protected")
            hub.create_repo(repo_id, user, private)
            self._json(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})

        def _validate_yaml(self) -> None:
            """Like the Hub: README.md front matter must be a YAML mapping (errors -> 400)."""
            content = json.loads(self._body() or b"{}").get("content", "")
            if not content.startswith("---\n") or "\n---" not in content[4:]:
                return self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            try:
                meta = yaml.safe_load(content[4:content.index("\n---", 4)])
            except yaml.YAMLError as exc:
                return self._json(400, {"errors": [{"message": f"invalid YAML: {exc}"}]},
                                  {"X-Error-Code": "BadRequest"})
            if not isinstance(meta, dict):
                return self._json(400, {"errors": [{"message": "metadata must be a mapping"}]},
                                  {"X-Error-Code": "BadRequest"})
            self._json(200, {"errors": [], "warnings": []})

        def _revision(self, repo_id: str, revision: str):
            """(repo, commit sha), or None after answering the client's 404."""
            repo = self._repo(repo_id)
            if repo is None:
                return None
            sha = repo.resolve(revision)
            if sha is None:
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return None
            return repo, sha

        def _model_info(self, repo_id: str, revision: str) -> None:
            if (found := self._revision(repo_id, revision)) is None:
                return
            repo, sha = found
            self._json(200, self._info(repo_id, repo, sha))

        def _tree(self, repo_id: str, revision: str) -> None:
            if (found := self._revision(repo_id, revision)) is None:
                return
            repo, sha = found
            self._json(200, [{"type": "file", "path": p, "size": len(c), "oid": _sha(c)}
                             for p, c in sorted(repo.commits[sha].items())])

        def _preupload(self, repo_id: str) -> None:
            body = json.loads(self._body() or b"{}")
            if self._repo(repo_id, write=True) is None:
                return
            self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                       for f in body.get("files", [])]})

        def _commit(self, repo_id: str, branch: str) -> None:
            lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
            repo = self._repo(repo_id, write=True)
            if repo is None:
                return
            if branch not in repo.branches:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
            message, changes = "", {}
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    message = value.get("summary", "")
                elif key == "file":
                    changes[value["path"]] = base64.b64decode(value["content"])
                elif key in ("deletedFile", "deletedFolder"):
                    changes[value["path"]] = None
                else:
                    return self._error(400, "BadRequest", f"unsupported commit operation {key}")
            sha = hub.commit(repo, branch, changes, message)
            self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                             "commitMessage": message, "success": True})

        def _branch(self, repo_id: str, branch: str) -> None:
            body = json.loads(self._body() or b"{}")
            repo = self._repo(repo_id, write=True)
            if repo is None:
                return
            if branch in repo.branches:
                return self._error(409, None, f"Reference already exists: refs/heads/{branch}")
            start = repo.resolve(body.get("startingPoint") or "main")
            if start is None:
                return self._error(404, "RevisionNotFound", "Invalid starting point")
            with hub.lock:
                repo.branches[branch] = start
            self._json(200, {})

        def _resolve(self, repo_id: str, revision: str, path: str) -> None:
            if (found := self._revision(repo_id, revision)) is None:
                return
            repo, sha = found
            content = repo.commits[sha].get(path)
            if content is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist on {revision}")
            self._send(200, content, "application/octet-stream",
                       {"X-Repo-Commit": sha, "ETag": f'"{_sha(content)}"'})

    return Handler


if __name__ == "__main__":  # python tests/hub_server.py: a server to try the CLI / UI by hand
    import os
    import sys

    server = HubServer(tokens={os.environ.get("HF_TOKEN", "hf_local_test_token"): "me"},
                       port=int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(f"HF_ENDPOINT={server.url}  (user 'me'; token from HF_TOKEN)", flush=True)
    with server:
        server.thread.join()
