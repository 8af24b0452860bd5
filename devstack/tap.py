"""An HTTP reverse proxy placed between a function and an emulator.

It forwards every request unchanged, counts requests by kind (so benchmarks can cross-check the
handler's own Storage counters) and can be switched down to simulate an outage: while down it
answers 503 without forwarding, the way an overloaded Google front end does.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class QuietHandler(BaseHTTPRequestHandler):
    """The platform's own HTTP servers: keep-alive HTTP/1.1, no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the caller died mid-request (a killed instance)


class ProxyHandler(QuietHandler):
    """A request relayed elsewhere (a tap, the handler's router): body in, answer back."""

    def request_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def forwarded_headers(self) -> dict[str, str]:
        return {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}

    def relay(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


def storage_request_kind(method: str, path: str, query: str) -> str:
    """Classify a Cloud Storage JSON API request: list, read, write or other."""
    if path.startswith("/upload/"):
        return "write"
    if "/o/" in path or path.endswith("/o"):
        if method == "GET":
            return "list" if path.endswith("/o") else "read"
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            return "write"
    return "other"


class Tap:
    def __init__(
        self,
        name: str,
        upstream: str,
        classify: Callable[[str, str, str], str] | None = None,
    ) -> None:
        self.name = name
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self._classify = classify or (lambda m, p, q: m)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.log: list[tuple[str, str, str, int]] | None = None  # (method, path, query, status)
        self.down = False
        self._local = threading.local()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"tap-{name}")

    def start(self) -> None:
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.statuses.clear()
            if self.log is not None:
                self.log.clear()

    def record(self, enabled: bool = True) -> None:
        """Keep every request (method, path, query, status) in `log`."""
        with self._lock:
            self.log = [] if enabled else None

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self._upstream, timeout=120)
            self._local.conn = conn
        return conn

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes | None):
        for attempt in range(2):  # a kept-alive upstream connection may have been closed
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        tap = self

        class Handler(ProxyHandler):
            def _handle(self) -> None:
                body = self.request_body()
                split = urlsplit(self.path)
                kind = tap._classify(self.command, split.path, split.query)
                if tap.down:
                    status, headers, payload = (
                        503,
                        [],
                        b'{"error": {"code": 503, "message": "tap down"}}',
                    )
                else:
                    fwd = self.forwarded_headers()
                    try:
                        status, headers, payload = tap._forward(self.command, self.path, fwd, body)
                    except OSError as exc:
                        status, headers, payload = 502, [], f'{{"error": "{exc}"}}'.encode()
                with tap._lock:
                    tap.counts[kind] += 1
                    tap.statuses[status] += 1
                    if tap.log is not None:
                        tap.log.append((self.command, split.path, split.query, status))
                self.relay(status, headers, payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        return Handler
