"""One small HTTP server per daemon: `/metrics` (Prometheus text), `/healthz`, `/readyz`.

`/healthz` is 200 while the loop has made progress recently (it calls `Health.beat()` every
iteration, empty polls included) and 503 when it is stuck; `/readyz` is 200 when the model is
ready and, for Kafka, partitions are assigned and the cluster is reachable (503 with `"kafka":
"connecting" | "unreachable" | "outputs not acknowledged"` otherwise). Served from a background thread so that a busy
loop still answers probes.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class Health:
    """Liveness and readiness state shared by the loop (writer) and the HTTP thread (reader)."""

    def __init__(self, stale_after: float = 30.0, clock=time.monotonic):
        self.stale_after = float(stale_after)
        self._clock = clock
        self._last = clock()
        self._ready = False
        self.detail: dict = {}

    def beat(self) -> None:
        """The loop made progress."""
        self._last = self._clock()

    def set_ready(self, ready: bool, **detail) -> None:
        self._ready = bool(ready)
        self.detail = detail

    @property
    def since_beat(self) -> float:
        return self._clock() - self._last

    @property
    def alive(self) -> bool:
        return self.since_beat <= self.stale_after

    @property
    def ready(self) -> bool:
        return self._ready


def liveness_timeout(poll_timeout_ms: float) -> float:
    """How long without a loop iteration before /healthz fails: a few poll intervals, but at
    least 30 s so a warm-up fit or a slow broker round-trip does not get the pod killed."""
    return max(5.0 * poll_timeout_ms / 1000.0, 30.0)


class _Handler(BaseHTTPRequestHandler):
    server_version = "streamgmm"

    def do_GET(self):  # noqa: N802 - http.server naming
        path = self.path.split("?", 1)[0]
        srv: HealthServer = self.server.owner  # type: ignore[attr-defined]
        if path == "/metrics" and srv.metrics is not None:
            body = srv.metrics.exposition()
            self._send(200, body, srv.metrics.content_type)
        elif path == "/healthz":
            h = srv.health
            ok = h.alive
            self._json(200 if ok else 503, {"status": "ok" if ok else "stalled",
                                            "seconds_since_progress": round(h.since_beat, 3)})
        elif path == "/readyz":
            h = srv.health
            ok = h.ready
            self._json(200 if ok else 503, {"status": "ready" if ok else "not ready", **h.detail})
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def do_HEAD(self):  # noqa: N802
        self.do_GET()

    def _json(self, code: int, obj: dict) -> None:
        self._send(code, (json.dumps(obj) + "\n").encode(), "application/json")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt, *args):  # route access logs to logging at debug level
        log.debug("%s %s", self.address_string(), fmt % args)


class HealthServer:
    """ThreadingHTTPServer on host:port (port 0 picks a free one; see `.port`)."""

    def __init__(self, host: str, port: int, health: Health, metrics=None):
        self.health = health
        self.metrics = metrics
        self._httpd = ThreadingHTTPServer((host, port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> "HealthServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.2}, name="metrics-http", daemon=True)
        self._thread.start()
        log.info("metrics and health on http://%s:%d (/metrics /healthz /readyz)",
                 self._httpd.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(2)


__all__ = ["Health", "HealthServer", "liveness_timeout"]
