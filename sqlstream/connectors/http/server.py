"""The HTTP side of the webhook source: a stdlib ``ThreadingHTTPServer`` whose handler
threads check and frame each POST body, queue it for the driver thread and wait for
its answer.

A request is answered by the driver side through :meth:`Posted.answer`; the handler
thread only turns that answer into a response. Everything the handler can judge
alone (path, method, size, content type, the body's outer shape) is answered here,
before anything is queued, with a 4xx and the reason as JSON.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow as pa

__all__ = ["LOG", "Posted", "RequestQueue", "WebhookServer", "body_format"]

LOG = logging.getLogger("sqlstream.http")

#: Content-Type (without parameters) → body format; "json" bodies may be JSON lines or one array
CONTENT_TYPES = {
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/ndjson": "json",
    "application/jsonl": "json",
    "application/json-lines": "json",
    "application/x-jsonlines": "json",
    "text/csv": "csv",
    "application/csv": "csv",
    "application/vnd.apache.arrow.stream": "arrow",
}
#: types that say nothing about the format: the source's ``format`` option decides
GENERIC_TYPES = ("", "text/plain", "application/octet-stream", "application/x-www-form-urlencoded")


def body_format(content_type: str | None, default: str) -> str | None:
    """The format a body is read in, or None for a content type the source cannot read."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in GENERIC_TYPES:
        return default
    return CONTENT_TYPES.get(kind)


@dataclass
class Posted:
    """One accepted POST: its framed body, waiting for the driver thread's answer."""

    number: int  # 1-based, since the source started
    format: str  # json | csv | arrow
    body: Any  # bytes (json lines, csv lines) or a pyarrow.Table (arrow)
    size: int  # bytes of the body as received
    lines: int = 0  # json/csv: line breaks in ``body`` (it ends with one)
    done: threading.Event = field(default_factory=threading.Event)
    status: int = 0
    response: dict = field(default_factory=dict)

    def answer(self, status: int, response: dict) -> None:
        if not self.done.is_set():
            self.status, self.response = status, response
            self.done.set()


class RequestQueue:
    """Bodies waiting for the driver, bounded by bytes: requests not yet answered
    count against ``max_pending_bytes`` (in ``respond = 'durable'`` until their ack)."""

    def __init__(self, max_pending_bytes: int):
        self.max_pending_bytes = max_pending_bytes
        self.lock = threading.Lock()
        self.waiting: collections.deque[Posted] = collections.deque()
        self.pending_bytes = 0  # queued or in the pipeline, not yet answered
        self.stopping = False
        self.received = 0
        self.refused_full = 0

    def offer(self, posted: Posted) -> str | None:
        """Queue ``posted``; None, or why not ("full" or "stopping")."""
        with self.lock:
            if self.stopping:
                return "stopping"
            if self.pending_bytes and self.pending_bytes + posted.size > self.max_pending_bytes:
                self.refused_full += 1
                return "full"
            self.pending_bytes += posted.size
            self.received += 1
            posted.number = self.received
            self.waiting.append(posted)
            return None

    def take(self, max_bytes: int) -> list[Posted]:
        """Queued requests, oldest first, up to about ``max_bytes`` (at least one)."""
        out: list[Posted] = []
        total = 0
        with self.lock:
            while self.waiting and (not out or total + self.waiting[0].size <= max_bytes):
                posted = self.waiting.popleft()
                total += posted.size
                out.append(posted)
        return out

    def release(self, requests: list[Posted]) -> None:
        with self.lock:
            self.pending_bytes -= sum(r.size for r in requests)

    def stop(self) -> None:
        """Queue nothing new (what waits is drained by the driver)."""
        with self.lock:
            self.stopping = True


class ResponseCounts:
    """Requests and the answers they got, counted by the handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.by_status: collections.Counter[int] = collections.Counter()

    def request(self) -> None:
        with self.lock:
            self.requests += 1

    def answered(self, status: int) -> None:
        with self.lock:
            self.by_status[status] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            by = dict(self.by_status)
            requests = self.requests
        return {
            "requests": requests,
            "responses_2xx": sum(n for s, n in by.items() if 200 <= s < 300),
            "rejected_4xx": sum(n for s, n in by.items() if 400 <= s < 500 and s != 429),
            "responses_429": by.get(429, 0),
            "responses_503": by.get(503, 0),
            "responses_504": by.get(504, 0),
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client posts many bodies on one connection
    disable_nagle_algorithm = True  # the response is two writes (headers, body): no delayed-ACK stall
    server: "WebhookServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        LOG.debug("%s: " + format, self.server.owner, *args)

    def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        self.server.counts.answered(status)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.server.queue.stopping:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": error}, headers)

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self.server.counts.request()
        self._refuse_method()

    do_PUT = do_DELETE = do_PATCH = do_GET  # noqa: N815

    def _refuse_method(self) -> None:
        self._discard_body()
        self._error(405, f"method {self.command} not allowed: POST records to {self.server.path}", {"Allow": "POST"})

    def _discard_body(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.server.max_body_size:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        server = self.server
        server.counts.request()
        if self.path.split("?", 1)[0] != server.path:
            self._discard_body()
            return self._error(404, f"no endpoint at {self.path}: POST records to {server.path}")
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            return self._error(411, "Content-Length required (chunked bodies are not supported)")
        if not length.isdigit():
            self.close_connection = True
            return self._error(400, f"invalid Content-Length: {length!r}")
        size = int(length)
        if size > server.max_body_size:
            self.close_connection = True  # the body is not read
            return self._error(413, f"body of {size} bytes is larger than max_body_size ({server.max_body_size} bytes)")
        body = self.rfile.read(size)
        if len(body) < size:
            self.close_connection = True
            return
        content_type = self.headers.get("Content-Type")
        fmt = body_format(content_type, server.default_format)
        if fmt is None:
            known = ", ".join(sorted(set(CONTENT_TYPES)))
            return self._error(415, f"unsupported Content-Type {content_type!r} (expected one of: {known})")
        try:
            posted = server.frame(fmt, body)
        except ValueError as error:
            return self._error(400, str(error))
        refused = server.queue.offer(posted)
        if refused == "full":
            return self._error(429, "too many records waiting for the pipeline: retry later",
                               {"Retry-After": str(server.retry_after_s)})
        if refused == "stopping":
            return self._error(503, "the source is shutting down", {"Retry-After": str(server.retry_after_s)})
        if not posted.done.wait(server.response_timeout_s):
            return self._error(504, f"the pipeline did not take the records within {server.response_timeout_s:g}s; "
                                    "they may still be delivered")
        self._send(posted.status, posted.response)


class WebhookServer(ThreadingHTTPServer):
    """The listening server; ``frame`` checks and frames a body (handler threads)."""

    daemon_threads = True
    allow_reuse_address = False  # a port in use is an error, not shared

    def __init__(self, address: tuple[str, int], owner: str, config: dict, queue: RequestQueue):
        self.owner = owner
        self.path = config["path"]
        self.default_format = config["format"]
        self.csv_header = config["header"]
        self.max_body_size = config["max_body_size"]
        self.response_timeout_s = config["response_timeout"] / 1e6
        self.retry_after_s = max(1, round(config["retry_after"] / 1e6))
        self.queue = queue
        self.counts = ResponseCounts()
        super().__init__(address, _Handler)

    def frame(self, fmt: str, body: bytes) -> Posted:
        """A queued request's body in the form the driver decodes: text formats as whole
        lines ending in a line break, a JSON array as JSON lines, Arrow as a table."""
        if fmt == "arrow":
            try:
                table = pa.ipc.open_stream(body).read_all()
            except (pa.ArrowInvalid, OSError) as error:
                raise ValueError(f"not an Arrow IPC stream: {error}") from None
            return Posted(0, fmt, table, len(body))
        stripped = body.lstrip()
        if not stripped.strip():
            raise ValueError("empty body: no records")
        if fmt == "json":
            if stripped[:1] == b"[":
                body = _array_as_lines(body)
            elif stripped[:1] != b"{":
                raise ValueError(f"not JSON: a body holds JSON objects, one a line, or an array of them "
                                 f"(it starts with {stripped[:20]!r})")
        elif self.csv_header:
            body = body.split(b"\n", 1)[1] if b"\n" in body else b""
            if not body.strip():
                raise ValueError("empty body: a header line but no records")
        if not body.endswith(b"\n"):
            body += b"\n"
        return Posted(0, fmt, body, len(body), lines=body.count(b"\n"))


def _array_as_lines(body: bytes) -> bytes:
    """A JSON array body as JSON lines (each element a line: a non-object becomes a dead letter)."""
    try:
        values = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(values, list):
        raise ValueError("not JSON lines nor a JSON array")
    if not values:
        raise ValueError("empty body: no records")
    return "\n".join(json.dumps(v, ensure_ascii=False) for v in values).encode() + b"\n"
