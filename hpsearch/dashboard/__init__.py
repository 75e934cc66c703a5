"""A live, read-only web page of the searches in a storage file.

``hpsearch dashboard search.db`` (or :func:`serve`) serves one HTML page and a small
JSON API; the page polls the API every second and draws its charts as SVG with a
few hundred lines of JavaScript shipped in this package — no CDN, no chart library,
so it works offline and on machines cut off from the internet.

The server is the standard library's :class:`http.server.ThreadingHTTPServer` on a
thread of its own. That is enough for what it serves (a handful of people looking at
one file, one small JSON document per second each) and adds no dependency; every
request opens the file read-only, so a dashboard can never change or lock a search.
It answers GET and HEAD only, binds 127.0.0.1 unless told otherwise, and sends a
Content-Security-Policy that lets the page load nothing from elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ..storage import StorageError, list_searches, load_search

logger = logging.getLogger(__name__)

__all__ = ["Dashboard", "serve"]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_CSP = "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _static(filename: str) -> bytes:
    return resources.files(__name__).joinpath("static").joinpath(filename).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "hpsearch-dashboard"
    storage: Path  # set on the subclass made for each server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._respond(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        if not self._host_allowed():
            # A page elsewhere must not reach a loopback dashboard through a DNS name
            # that it points at 127.0.0.1 (DNS rebinding).
            self._send(HTTPStatus.FORBIDDEN, b"forbidden host\n", "text/plain; charset=utf-8", head)
            return
        url = urlsplit(self.path)
        if url.path in _STATIC:
            filename, content_type = _STATIC[url.path]
            self._send(HTTPStatus.OK, _static(filename), content_type, head)
        elif url.path == "/api/searches":
            self._json(self._searches(), head)
        elif url.path == "/api/search":
            name = parse_qs(url.query).get("name", [None])[0]
            self._json(self._search(name), head)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head)

    def _host_allowed(self) -> bool:
        bound = str(self.server.server_address[0])  # type: ignore[index]
        if bound not in ("127.0.0.1", "::1"):
            return True  # served on purpose beyond this machine
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit("]", 1)[0].lstrip("[") if host.startswith("[") else host.split(":", 1)[0]
        return name in ("127.0.0.1", "localhost", "::1")

    def _searches(self) -> dict[str, Any]:
        try:
            searches = list_searches(self.storage) if self.storage.exists() else []
        except (StorageError, sqlite3.Error) as exc:  # being created, or not a storage file
            return {"error": str(exc)}
        summaries = []
        for s in searches:
            d = s.to_dict()
            summaries.append({k: d[k] for k in (
                "name", "status", "candidates_done", "total", "tasks_done", "tasks_total", "best_score",
                "n_failures", "elapsed")})
        return {"file": str(self.storage), "searches": summaries}

    def _search(self, name: str | None) -> dict[str, Any]:
        try:
            return load_search(self.storage, name).to_dict()
        except (StorageError, sqlite3.Error) as exc:
            return {"error": str(exc)}

    def _json(self, data: dict[str, Any], head: bool) -> None:
        body = json.dumps(_clean(data), allow_nan=False).encode()
        self._send(HTTPStatus.OK, body, "application/json", head)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        logger.debug("%s %s", self.address_string(), format % args)


class Dashboard:
    """The dashboard server of one storage file, running on a thread of its own.

    Parameters
    ----------
    storage : str or path
        The storage file; it may not exist yet (the page waits for it).
    host : str
        Address to listen on; ``"127.0.0.1"`` (default) serves this machine only.
    port : int
        0 picks a free port (see :attr:`url`).

    Examples
    --------
    >>> import json, urllib.request
    >>> with Dashboard("search.db", port=0) as dash:
    ...     with urllib.request.urlopen(dash.url + "api/searches") as reply:
    ...         json.load(reply)["searches"]
    []
    """

    def __init__(self, storage: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"storage": Path(storage).expanduser().resolve()})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = str(host)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> Dashboard:
        self._thread = threading.Thread(target=self._server.serve_forever, name="hpsearch-dashboard", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on this thread until interrupted (Ctrl-C), then close."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(10)
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve(storage: Any, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False) -> None:
    """Serve the dashboard of ``storage`` until Ctrl-C (what ``hpsearch dashboard`` runs)."""
    dash = Dashboard(storage, host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the dashboard listens on %s: anyone who can reach this address can read it", host)
    logger.warning("hpsearch dashboard of %s: %s  (Ctrl-C to stop)", storage, dash.url)
    if open_browser:
        webbrowser.open(dash.url)
    dash.serve_forever()
