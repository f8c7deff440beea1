"""The HTTP endpoint of a run (``--http HOST:PORT`` / ``SET http``): ``/metrics``
(Prometheus text), ``/live``, ``/ready``, ``/api/pipeline`` (JSON for the console) and
the console itself at ``/``.

A :class:`http.server.ThreadingHTTPServer` on a daemon thread: each request reads the
driver's counters as they are at that moment (the run loop never waits for it, and
takes no lock for it). It is read-only and has no authentication: it binds 127.0.0.1
unless told otherwise, and anyone who can reach another address can read the
pipeline's shape, counters and the latest dead-letter rows.

``/live`` answers 200 while the process serves. ``/ready`` answers 200 once the run's
sources and sinks are open and any checkpoint state is restored (the run takes input),
503 before that and after the run ended.
"""

from __future__ import annotations

import contextlib
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Callable, Iterator

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from sqlstream.errors import SqlStreamError
from sqlstream.observability.metrics import PipelineCollector
from sqlstream.observability.pipeline_view import pipeline_view
from sqlstream.runtime.driver import Driver

__all__ = ["ObservabilityServer", "serving"]

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}


class ObservabilityServer:
    """Serves one run's endpoints on ``address`` (``(host, port)``; port 0: any free one)."""

    def __init__(self, address: tuple[str, int], driver_of: Callable[[], Driver | None], pipeline: str):
        self.driver_of = driver_of
        self.pipeline = pipeline
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(PipelineCollector(driver_of, pipeline))
        handler = type("Handler", (_Handler,), {"endpoint": self})
        try:
            self.httpd = ThreadingHTTPServer(address, handler)
        except OSError as error:
            host, port = address
            raise SqlStreamError(f"--http {host}:{port}: cannot listen: {error.strerror or error}",
                                 hint="choose another port (0 picks a free one)") from error
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="sqlstream-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> "ObservabilityServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def ready(self) -> bool:
        driver = self.driver_of()
        return driver is not None and driver.ready and not driver.finished


@contextlib.contextmanager
def serving(address: tuple[str, int] | None, driver_of: Callable[[], Driver | None], pipeline: str,
            say: Callable[[str], None]) -> Iterator[ObservabilityServer | None]:
    """The endpoint on ``address`` for the duration of the block (None: nothing served);
    ``say`` is told its URL."""
    if address is None:
        yield None
        return
    server = ObservabilityServer(address, driver_of, pipeline).start()
    say(f"serving /metrics, /live, /ready and the console on {server.url}")
    try:
        yield server
    finally:
        server.close()


class _Handler(BaseHTTPRequestHandler):
    endpoint: ObservabilityServer
    server_version = "sqlstream"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        endpoint = self.endpoint
        if path == "/metrics":
            self._send(HTTPStatus.OK, generate_latest(endpoint.registry), CONTENT_TYPE_LATEST)
        elif path == "/live":
            self._send(HTTPStatus.OK, b"live\n", "text/plain; charset=utf-8")
        elif path == "/ready":
            ready = endpoint.ready()
            self._send(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE,
                       b"ready\n" if ready else b"not ready\n", "text/plain; charset=utf-8")
        elif path == "/api/pipeline":
            view = pipeline_view(endpoint.driver_of(), endpoint.pipeline)
            self._send(HTTPStatus.OK, orjson.dumps(view), "application/json")
        elif path in _STATIC:
            name, content_type = _STATIC[path]
            body = resources.files("sqlstream.observability").joinpath("console", name).read_bytes()
            self._send(HTTPStatus.OK, body, content_type)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found: try /metrics, /live, /ready or /\n", "text/plain")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet: stderr is the run's summary
        return
