"""A loopback server speaking the parts of Mastodon's REST API and of Bluesky's XRPC (a PDS) that replies and
follows use, with their documented request and answer shapes; it records every request for the tests.

Mastodon: `POST /api/v1/statuses` (Bearer token, `Idempotency-Key` remembered: a repeat returns the status
already made), `GET /api/v2/search` (`resolve=true`: statuses by URL, accounts by acct), `GET
/api/v1/accounts/lookup`, `POST /api/v1/accounts/:id/follow`. Bluesky: `com.atproto.server.createSession`,
`com.atproto.repo.createRecord` (a taken rkey is refused), `com.atproto.repo.getRecord`,
`com.atproto.identity.resolveHandle`.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeSocial:
    """One server for both platforms (paths do not overlap). `token`, `handle`/`password` are what it accepts."""

    token: str
    handle: str
    password: str
    did: str = "did:plc:acmebrand"
    calls: list[Call] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    follows: list[str] = field(default_factory=list)
    records: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)  # (repo, collection, rkey)
    # Remote statuses the instance can resolve by URL: url -> local status id.
    known_statuses: dict[str, str] = field(default_factory=dict)
    # Accounts: acct (as this instance writes it) -> local account id.
    known_accounts: dict[str, str] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)  # Bluesky handle -> did
    # Next answers forced on a path: path -> list of (status, body); consumed in order.
    forced: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    # Seconds to wait before answering (after doing the work) on a path, once.
    delay_once: dict[str, float] = field(default_factory=dict)
    _idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.port = self._httpd.server_address[1]
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSocial:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def posts_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path == path]

    # -- answers ---------------------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> Any:
        with self._lock:
            self.calls.append(Call(method, path, query, headers, body))
            forced = self.forced.get(path)
            if forced:
                return forced.pop(0)
            if path.startswith("/xrpc/"):
                return self._xrpc(method, path.removeprefix("/xrpc/"), query, headers, body)
            return self._mastodon(method, path, query, headers, body)

    def _mastodon(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any) -> Any:
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, {"error": "The access token is invalid"}
        if method == "POST" and path == "/api/v1/statuses":
            key = headers.get("idempotency-key")
            if key and key in self._idempotency:
                return 200, self._idempotency[key]
            text = body.get("status") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text.strip():
                return 422, {"error": "Validation failed: Text can't be blank"}
            if len(text) > 500:
                return 422, {"error": "Validation failed: Text character limit of 500 exceeded"}
            status_id = str(200_000 + len(self.statuses))
            status = {
                "id": status_id,
                "uri": f"{self.url}/users/acme/statuses/{status_id}",
                "url": f"{self.url}/@acme/{status_id}",
                "content": f"<p>{text}</p>",
                "in_reply_to_id": body.get("in_reply_to_id"),
                "visibility": "public",
                "account": {"id": "1", "username": "acme", "acct": "acme"},
            }
            self.statuses.append(status)
            if key:
                self._idempotency[key] = status
            return 200, status
        if method == "GET" and path == "/api/v2/search":
            q = query.get("q", "")
            found: dict[str, list[Any]] = {"accounts": [], "statuses": [], "hashtags": []}
            if query.get("type") == "statuses" and q in self.known_statuses and query.get("resolve") == "true":
                found["statuses"].append({"id": self.known_statuses[q], "url": q})
            if query.get("type") == "accounts" and q.removeprefix("@") in self.known_accounts:
                acct = q.removeprefix("@")
                found["accounts"].append({"id": self.known_accounts[acct], "acct": acct, "url": f"https://x/@{acct}"})
            return 200, found
        if method == "GET" and path == "/api/v1/accounts/lookup":
            acct = query.get("acct", "")
            if acct in self.known_accounts:
                return 200, {"id": self.known_accounts[acct], "acct": acct, "url": f"https://x/@{acct}"}
            return 404, {"error": "Record not found"}
        if method == "POST" and path.startswith("/api/v1/accounts/") and path.endswith("/follow"):
            account_id = path.split("/")[4]
            if account_id not in self.known_accounts.values():
                return 404, {"error": "Record not found"}
            if account_id not in self.follows:
                self.follows.append(account_id)
            return 200, {"id": account_id, "following": True, "requested": False, "followed_by": False}
        return 404, {"error": "Not found"}

    def _xrpc(self, method: str, nsid: str, query: dict[str, str], headers: dict[str, str], body: Any) -> Any:
        if nsid == "com.atproto.server.createSession" and method == "POST":
            if body == {"identifier": self.handle, "password": self.password}:
                return 200, {
                    "accessJwt": "jwt-access-1",
                    "refreshJwt": "jwt-refresh-1",
                    "did": self.did,
                    "handle": self.handle,
                }
            return 401, {"error": "AuthenticationRequired", "message": "Invalid identifier or password"}
        if headers.get("authorization") != "Bearer jwt-access-1":
            return 401, {"error": "AuthenticationRequired", "message": "Authentication Required"}
        if nsid == "com.atproto.repo.createRecord" and method == "POST":
            repo, collection, rkey = body.get("repo"), body.get("collection"), body.get("rkey")
            record = body.get("record")
            if repo != self.did:
                return 400, {"error": "InvalidRequest", "message": "Input/repo must be the session's repo"}
            if not isinstance(record, dict) or record.get("$type") != collection:
                return 400, {"error": "InvalidRecord", "message": "Invalid $type"}
            if collection == "app.bsky.feed.post" and len(record.get("text", "")) > 300:
                return 400, {"error": "InvalidRecord", "message": "Record/text must not be longer than 300 graphemes"}
            if (repo, collection, rkey) in self.records:
                return 400, {"error": "InvalidRequest", "message": f"Record already exists: {rkey}"}
            cid = "bafyrei" + hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()[:40]
            uri = f"at://{repo}/{collection}/{rkey}"
            self.records[(repo, collection, rkey)] = {"uri": uri, "cid": cid, "value": record}
            return 200, {"uri": uri, "cid": cid, "commit": {"cid": "bafyreicommit", "rev": "3l000"}}
        if nsid == "com.atproto.repo.getRecord" and method == "GET":
            found = self.records.get((query.get("repo", ""), query.get("collection", ""), query.get("rkey", "")))
            if found is None:
                return 400, {"error": "RecordNotFound", "message": "Could not locate record"}
            return 200, found
        if nsid == "com.atproto.identity.resolveHandle" and method == "GET":
            did = self.handles.get(query.get("handle", ""))
            return (200, {"did": did}) if did else (400, {"error": "InvalidRequest", "message": "Unable to resolve"})
        return 501, {"error": "MethodNotImplemented", "message": nsid}


def _handler(fake: FakeSocial) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                body = None
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, answer = fake.answer(method, parts.path, query, headers, body)
            delay = fake.delay_once.pop(parts.path, 0.0)
            if delay:
                time.sleep(delay)
            payload = orjson.dumps(answer)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up waiting

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
