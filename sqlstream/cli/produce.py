"""``sqlstream produce``: publish generated rows to a NATS subject at a given rate.

It is a pipeline like any other — a ``generator`` source into a ``nats`` sink —
written from the command line::

    sqlstream produce sensors.readings \\
        --columns "sensor_id BIGINT, ts TIMESTAMP, temp DOUBLE" \\
        --rate 200 -o fields.sensor_id.max=99 -o fields.temp.min=15 -o fields.temp.max=45

``--stream NAME`` publishes through JetStream (each row acked by the server) and
creates the stream, capturing the subject, if it does not exist. ``--count N``
stops after N rows; otherwise it runs until Ctrl-C. On a terminal a status line on
stderr counts what was published and the rate (``published 1,200 / 5,000 rows · 200/s``).
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from typing import TextIO

import nats
from nats.js.errors import NotFoundError

from sqlstream.cli.session_setup import make_session
from sqlstream.errors import ConnectorError, SqlStreamError

__all__ = ["cmd_produce", "produce_sql", "PublishProgress"]


class PublishProgress:
    """The status line of ``produce`` on a terminal: rows published (of ``--count``) and
    the rate over the last interval."""

    def __init__(self, stream: TextIO, total: int | None):
        self.stream = stream
        self.total = total
        self._last = (time.monotonic(), 0)
        self._shown = False

    def update(self, driver) -> None:
        now = time.monotonic()
        published = sum(s.rows_out for s in driver.sinks)
        then, before = self._last
        rate = (published - before) / max(now - then, 1e-6)
        self._last = (now, published)
        of = f" / {self.total:,}" if self.total is not None else ""
        self.stream.write(f"\r\x1b[2Kpublished {published:,}{of} rows · {rate:,.0f}/s")
        self.stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def produce_sql(args) -> str:
    """The pipeline ``produce`` runs."""
    options = {"connector": "generator", "rows_per_second": str(args.rate)}
    if args.count is not None:
        options["max_rows"] = str(args.count)
    for item in args.option:
        if "=" not in item:
            raise SqlStreamError(f"-o expects key=value, got '{item}'", hint="e.g. -o fields.temp.min=15")
        key, value = item.split("=", 1)
        options[key.strip()] = value.strip()
    source = ", ".join(f"{key} = {_quote(value)}" for key, value in options.items())
    sink = {"connector": "nats", "url": args.url, "subject": args.subject, "format": args.format}
    if args.stream:
        sink["stream"] = args.stream
    sink_options = ", ".join(f"{key} = {_quote(value)}" for key, value in sink.items())
    return (
        f"CREATE SOURCE generated ({args.columns}) WITH ({source});\n"
        f"CREATE SINK published AS SELECT * FROM generated WITH ({sink_options});\n"
    )


def stream_subject(subject: str) -> str:
    """The subject a stream must capture for a (templated) sink subject."""
    return re.sub(r"\{[^}]*\}", "*", subject)


async def _ensure_stream(url: str, stream: str, subject: str) -> bool:
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(stream)
            return False
        except NotFoundError:
            await js.add_stream(name=stream, subjects=[stream_subject(subject)])
            return True
    finally:
        await nc.close()


def cmd_produce(args) -> int:
    session = make_session(None, [], [])
    session.settings["dead_letter_path"] = "off"
    session.execute(produce_sql(args), path="<produce>")
    if args.stream:
        try:
            created = asyncio.run(_ensure_stream(args.url, args.stream, args.subject))
        except Exception as error:  # noqa: BLE001 - reported as a connector error
            raise ConnectorError(f"cannot reach NATS at {args.url} to check stream '{args.stream}': {error}",
                                 hint="start nats-server -js (JetStream enabled)") from error
        if created:
            print(f"sqlstream: created stream {args.stream} ({stream_subject(args.subject)})", file=sys.stderr)
    rate = f"{args.rate}/s" if args.rate else "as fast as possible"
    count = f"{args.count:,} rows" if args.count is not None else "until Ctrl-C"
    print(f"sqlstream: publishing to {args.subject} on {args.url} at {rate}, {count}", file=sys.stderr)

    def on_signal(signum, frame):
        session.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    progress = PublishProgress(sys.stderr, args.count) if sys.stderr.isatty() else None
    try:
        summary = session.run(progress=progress.update if progress else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress:
            progress.clear()
    print(f"sqlstream: {summary.line()}", file=sys.stderr)
    return 0
