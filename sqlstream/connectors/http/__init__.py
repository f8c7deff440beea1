"""``connector = 'http'``: a webhook source; clients POST records to it.

::

    CREATE SOURCE events (id BIGINT, kind VARCHAR, ts TIMESTAMP)
    WITH (connector = 'http', listen = '127.0.0.1:8080', path = '/events', format = 'json');

A body holds JSON lines, a JSON array of objects, CSV lines or an Arrow IPC stream
(``format``, or the request's Content-Type). A request is answered 200 once its
records were taken into the pipeline (``respond = 'accepted'``) or once every sink
holds its rows durably (``respond = 'durable'``), with how many rows were accepted
and the dead letters; 429 with Retry-After while ``max_pending_bytes`` of bodies wait.
See docs/connectors/http.md.
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from sqlstream.connectors.base import RunContext, SourceBatch, SourceConnector, SourceReader
from sqlstream.connectors.batching import IDLE_POLL_S
from sqlstream.connectors.http.decode import BodyDecoder, response_body
from sqlstream.connectors.http.server import LOG, Posted, RequestQueue, WebhookServer
from sqlstream.connectors.options import NULL_VALUES_OPTION, OptionSpec, null_spellings
from sqlstream.connectors.registry import register_source
from sqlstream.errors import ConnectorError, Location
from sqlstream.sizes import parse_bytes

__all__ = ["HttpSource", "HttpReader"]

_TAKE_BYTES = 16 << 20  # bodies decoded together in one poll, about
_SERVE_POLL_S = 0.05  # how soon the server loop notices a stop


def _listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return "expected 'host:port' (port 0: any free port)"
    return None


def _size(value: str) -> str | None:
    try:
        return None if parse_bytes(value) else "must be a size, e.g. '16MB'"
    except ValueError as error:
        return str(error)


@register_source
class HttpSource(SourceConnector):
    name = "http"
    options = (
        OptionSpec("listen", default="127.0.0.1:8080", check=_listen,
                   doc="host:port to listen on; port 0 picks a free port (logged on stderr)"),
        OptionSpec("path", default="/", check=lambda v: None if v.startswith("/") else "must start with '/'",
                   doc="the URL path records are POSTed to"),
        OptionSpec("format", "choice", default="json", choices=("json", "csv", "arrow"),
                   doc="body format when the Content-Type does not say: json (lines or an array) | csv | arrow (IPC stream)"),
        OptionSpec("delimiter", default=",", doc="csv field delimiter",
                   check=lambda v: None if len(v) == 1 else "must be one character"),
        OptionSpec("header", "bool", default=False, doc="csv: each body starts with a header line (skipped)"),
        NULL_VALUES_OPTION,
        OptionSpec("max_body_size", default="16MB", check=_size, doc="larger bodies are refused (413)"),
        OptionSpec("max_pending_bytes", default="64MB", check=_size,
                   doc="bodies waiting for their answer, at most; beyond, requests get 429 with Retry-After"),
        OptionSpec("respond", "choice", default="accepted", choices=("accepted", "durable"),
                   doc="answer 200 once the records are taken into the pipeline, or once every sink holds them durably"),
        OptionSpec("response_timeout", "duration", default=30_000_000,
                   doc="longest wait for the answer; then 504"),
        OptionSpec("retry_after", "duration", default=1_000_000, doc="Retry-After of a 429 / 503"),
    )

    def validate(self, where: Location | None) -> None:
        for name in ("max_body_size", "max_pending_bytes"):
            self.config[name] = parse_bytes(self.config[name])

    @property
    def acknowledges(self) -> bool:
        """``respond = 'durable'``: requests are answered on the batch's ack."""
        return self.config["respond"] == "durable"

    def open(self, ctx: RunContext) -> SourceReader:
        return HttpReader(self, ctx)

    def describe(self) -> str:
        c = self.config
        return f"http({c['listen']}{c['path']}, {c['format']}, respond {c['respond']})"


class HttpReader(SourceReader):
    """Serves HTTP on background threads; ``poll`` decodes what was posted since."""

    drains_on_stop = True

    def __init__(self, connector: HttpSource, ctx: RunContext):
        config = connector.config
        self.owner = f"source '{connector.source_name}'"
        self.clock = ctx.clock
        self.durable = config["respond"] == "durable"
        self.queue = RequestQueue(config["max_pending_bytes"])
        self.decoder = BodyDecoder(connector.schema, connector.source_name, config["timestamp_format"],
                                   config["delimiter"], null_spellings(config["null_values"]))
        host, _, port = config["listen"].rpartition(":")
        try:
            self.server = WebhookServer((host.strip("[]"), int(port)), self.owner, config, self.queue)
        except OSError as error:
            raise ConnectorError(
                f"{self.owner}: cannot listen on {config['listen']}: {error.strerror or error}",
                hint="choose another port (listen = 'host:0' picks a free one)",
            ) from error
        self.host, self.port = self.server.server_address[:2]
        self.url = f"http://{host}:{self.port}{config['path']}"
        self.unanswered: list[Posted] = []  # durable: taken, waiting for the ack
        self.rows = 0
        self.thread = threading.Thread(target=self.server.serve_forever, args=(_SERVE_POLL_S,),
                                       name=f"http {connector.source_name}", daemon=True)
        self.thread.start()
        # port 0: the port is news the user needs (a warning shows without logging set up)
        (LOG.warning if int(port) == 0 else LOG.info)("%s: listening on %s", self.owner, self.url)

    # -- reading (driver thread) -------------------------------------------------------------------

    def poll(self) -> SourceBatch | None:
        requests = self.queue.take(_TAKE_BYTES)
        return self._decode(requests) if requests else None

    def _decode(self, requests: list[Posted]) -> SourceBatch:
        decoded = self.decoder.decode(requests)
        responses = [response_body(int(n), letters) for n, letters in zip(decoded.accepted, decoded.dead_of, strict=True)]
        self.rows += decoded.table.num_rows
        batch = decoded.table.combine_chunks().to_batches()
        batch = batch[0] if batch else pa.RecordBatch.from_pylist([], schema=decoded.table.schema)
        if not self.durable:
            self._answer(requests, responses)
            return SourceBatch(batch, decoded.dead, raw_count=decoded.records)
        for posted, body in zip(requests, responses, strict=True):
            posted.response = body
        self.unanswered.extend(requests)

        def ack() -> None:
            self._answer(requests, responses)
            done = {id(r) for r in requests}
            self.unanswered = [r for r in self.unanswered if id(r) not in done]

        return SourceBatch(batch, decoded.dead, ack=ack, raw_count=decoded.records)

    def _answer(self, requests: list[Posted], responses: list[dict]) -> None:
        self.queue.release(requests)
        for posted, body in zip(requests, responses, strict=True):
            posted.answer(200, body)

    def next_wakeup(self) -> float | None:
        return None if self.queue.waiting else self.clock.monotonic() + IDLE_POLL_S

    # -- stopping --------------------------------------------------------------------------------

    def stop_receiving(self) -> None:
        """Queue nothing new (later requests get 503) and close the listening socket;
        requests already queued are drained and answered."""
        self.queue.stop()
        self._shutdown()

    def drain(self) -> SourceBatch | None:
        return self.poll()

    def abandon(self, deadline_s: float) -> int:
        left = self.queue.take(1 << 62)
        self._refuse(left, f"the source stopped before the records were taken (drain deadline {deadline_s:g}s)")
        return len(left)

    def _refuse(self, requests: list[Posted], why: str) -> None:
        self.queue.release(requests)
        for posted in requests:
            posted.answer(503, {"error": why})

    def _shutdown(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()

    def close(self) -> None:
        self.queue.stop()
        self._shutdown()
        self._refuse(self.queue.take(1 << 62), "the source stopped before the records were taken")
        self._refuse(self.unanswered, "the pipeline stopped before the rows were durable in every sink")
        self.unanswered = []

    def status(self) -> dict[str, Any]:
        """For SHOW METRICS: ``requests`` (every request), ``accepted_requests`` (queued
        for the pipeline), ``accepted_rows`` (rows they gave), ``responses_2xx``,
        ``rejected_4xx`` (bad requests: 400, 404, 405, 411, 413, 415), ``responses_429``
        (backpressure: ``max_pending_bytes``), ``responses_503`` (stopping), ``responses_504``
        (the pipeline too slow for ``response_timeout``), ``queued_requests`` and
        ``pending_bytes`` (taken by nobody yet / not answered yet)."""
        with self.queue.lock:
            queued = len(self.queue.waiting)
        return {
            "url": self.url,
            "port": self.port,
            **self.server.counts.snapshot(),
            "accepted_requests": self.queue.received,
            "accepted_rows": self.rows,
            "refused_full": self.queue.refused_full,
            "queued_requests": queued,
            "pending_bytes": self.queue.pending_bytes,
        }
