"""Local Matomo and Plausible servers for the web analytics tests: the documented request and answer shapes.

Matomo's Reporting API: `POST /index.php?module=API&method=<Plugin.method>&idSite=&period=day&date=&format=JSON`
with `token_auth` in the form body; a wrong token answers `{"result": "error", "message": …}` (HTTP 200, as Matomo
does). Plausible's Stats API v1: `GET /api/v1/stats/aggregate|breakdown?site_id=&period=day&date=…` with
`Authorization: Bearer <key>`; a wrong key is a 401. Each server checks what it is sent and records it, and refuses
what a real one would (a token in the URL, another site, a period other than day).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass
class SiteDay:
    """One day of a site, as both tools would report it."""

    visits: int
    visitors: int
    pageviews: int
    visit_duration: int  # seconds
    bounce_rate: int  # percent
    conversions: int
    # Visits by referrer: social networks as Matomo labels them (Referrers.getSocials) and every source as
    # Plausible names them (visit:source), social or not.
    socials: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    goals: dict[str, int] = field(default_factory=dict)  # Plausible: goal → converted visitors


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class AnalyticsServer:
    """`AnalyticsServer(kind, days, secret, site)`; `.url`; `.requests`; `.errors` (what it refused and why)."""

    def __init__(self, kind: str, days: dict[str, SiteDay], secret: str, site: str, host: str = "127.0.0.1") -> None:
        assert kind in ("matomo", "plausible")
        self.kind, self.days, self.secret, self.site = kind, days, secret, site
        self.requests: list[Request] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._httpd = _Server((host, 0), _handler(self))
        self.url = f"http://{host}:{self._httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> AnalyticsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> AnalyticsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def refuse(self, why: str) -> None:
        with self._lock:
            self.errors.append(why)

    # -- Matomo ------------------------------------------------------------------------------------

    def matomo(self, request: Request) -> tuple[int, Any]:
        q = request.query
        if request.method != "POST" or request.path != "/index.php":
            self.refuse(f"{request.method} {request.path}")
            return 404, {"result": "error", "message": "not found"}
        if "token_auth" in q:
            self.refuse("token_auth in the URL")
        if request.form.get("token_auth") != self.secret:
            return 200, {"result": "error", "message": "You can't access this resource as it requires 'view' access."}
        if q.get("module") != "API" or q.get("format") != "JSON" or q.get("period") != "day":
            self.refuse(f"bad parameters {q}")
            return 200, {"result": "error", "message": "bad parameters"}
        if q.get("idSite") != self.site:
            self.refuse(f"idSite {q.get('idSite')}")
            return 200, {"result": "error", "message": "You can't access this resource."}
        day = self.days.get(q.get("date", ""))
        method = q.get("method")
        if method == "VisitsSummary.get":
            if day is None:
                return 200, []  # a day without data
            return 200, {
                "nb_uniq_visitors": day.visitors,
                "nb_visits": day.visits,
                "nb_users": 0,
                "nb_actions": day.pageviews + 3,
                "max_actions": 9,
                "bounce_count": round(day.visits * day.bounce_rate / 100),
                "sum_visit_length": day.visit_duration * day.visits,
                "nb_visits_converted": day.conversions,
                "bounce_rate": f"{day.bounce_rate}%",
                "nb_actions_per_visit": 2.1,
                "avg_time_on_site": day.visit_duration,
            }
        if method == "Actions.get":
            return 200, {} if day is None else {"nb_pageviews": day.pageviews, "nb_uniq_pageviews": day.pageviews - 1}
        if method == "Referrers.getSocials":
            socials = day.socials if day is not None else {}
            return 200, [
                {"label": label, "nb_uniq_visitors": visits, "nb_visits": visits, "nb_actions": visits * 2}
                for label, visits in sorted(socials.items(), key=lambda kv: -kv[1])
            ]
        if method == "Goals.get":
            if day is None:
                return 200, []
            rate = round(day.conversions / day.visits * 100, 2) if day.visits else 0
            return 200, {
                "nb_conversions": day.conversions,
                "nb_visits_converted": day.conversions,
                "revenue": 0,
                "conversion_rate": f"{rate}%",
            }
        self.refuse(f"method {method}")
        return 200, {"result": "error", "message": f"The method '{method}' does not exist"}

    # -- Plausible ---------------------------------------------------------------------------------

    def plausible(self, request: Request) -> tuple[int, Any]:
        q = request.query
        if request.method != "GET":
            self.refuse(f"{request.method} {request.path}")
            return 405, {"error": "method not allowed"}
        if request.headers.get("authorization") != f"Bearer {self.secret}":
            return 401, {"error": "Invalid API key or site ID. Please make sure you're using a valid API key."}
        if q.get("site_id") != self.site:
            self.refuse(f"site_id {q.get('site_id')}")
            return 401, {"error": "Invalid API key or site ID."}
        if q.get("period") != "day" or "date" not in q:
            self.refuse(f"period {q}")
            return 400, {"error": "bad period"}
        day = self.days.get(q["date"])
        if request.path == "/api/v1/stats/aggregate":
            wanted = q.get("metrics", "visitors").split(",")
            values = {
                "visitors": day.visitors if day else 0,
                "visits": day.visits if day else 0,
                "pageviews": day.pageviews if day else 0,
                "visit_duration": day.visit_duration if day else 0,
                "bounce_rate": day.bounce_rate if day else 0,
            }
            unknown = [m for m in wanted if m not in values]
            if unknown:
                self.refuse(f"metrics {unknown}")
                return 400, {"error": f"The metric `{unknown[0]}` is not recognized."}
            return 200, {"results": {m: {"value": values[m]} for m in wanted}}
        if request.path == "/api/v1/stats/breakdown":
            prop = q.get("property")
            metrics = q.get("metrics", "visitors").split(",")
            if prop == "visit:source":
                rows = day.sources if day else {}
                if metrics != ["visits"]:
                    self.refuse(f"source metrics {metrics}")
                return 200, {
                    "results": [{"source": s, "visits": v} for s, v in sorted(rows.items(), key=lambda kv: -kv[1])]
                }
            if prop == "event:goal":
                goals = day.goals if day else {}
                return 200, {"results": [{"goal": g, "visitors": v, "events": v + 1} for g, v in goals.items()]}
            self.refuse(f"property {prop}")
            return 400, {"error": "bad property"}
        self.refuse(f"path {request.path}")
        return 404, {"error": "not found"}


def _handler(server: AnalyticsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            request = Request(
                method,
                parts.path,
                {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()} if method == "POST" else {},
                {k.lower(): v for k, v in self.headers.items()},
            )
            with server._lock:
                server.requests.append(request)
            status, answer = server.matomo(request) if server.kind == "matomo" else server.plausible(request)
            payload = orjson.dumps(answer)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler
