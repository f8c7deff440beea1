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
A mistake in a flag is reported at that flag (``sqlstream produce --columns: error:
...``), never at the generated SQL, which the user did not write.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import TextIO

import nats
from nats.js.errors import NotFoundError

from sqlstream.cli.session_setup import make_session
from sqlstream.errors import ConnectorError, Location, SqlStreamError

__all__ = ["cmd_produce", "produce_pipeline", "FlagLocation", "ProducePipeline", "PublishProgress"]


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


@dataclass(frozen=True)
class _Flag:
    """A command-line flag as typed, and the span of the pipeline text it wrote."""

    start: int
    end: int
    flag: str  # '--columns', '-o', ...
    text: str  # its value as typed
    verbatim: bool  # written into the pipeline as typed (else as an option: key = 'value')


class ProducePipeline:
    """The pipeline ``produce`` runs, written from its flags, remembering which flag
    wrote which part so that an error in the text points at the flag instead."""

    def __init__(self) -> None:
        self.text = ""
        self.flags: list[_Flag] = []

    def write(self, text: str, flag: str | None = None, typed: str | None = None) -> None:
        if flag is not None:
            verbatim = typed is None
            self.flags.append(_Flag(len(self.text), len(self.text) + len(text), flag, text if verbatim else typed, verbatim))
        self.text += text

    def options(self, items: list[tuple[str, str, str | None, str | None]]) -> None:
        """``key = 'value', ...``: (key, value, flag, typed) each."""
        for i, (key, value, flag, typed) in enumerate(items):
            self.write(", " if i else "")
            self.write(f"{key} = {_quote(value)}", flag, typed)

    def blame(self, error: SqlStreamError) -> SqlStreamError:
        """``error`` located at the flag whose text it points into (it is returned
        unchanged when it points at nothing a flag wrote)."""
        where = error.location
        if where is None or where.path != PIPELINE_PATH:
            return error
        lines = self.text.split("\n")
        offset = sum(len(line) + 1 for line in lines[: where.line - 1]) + where.col - 1
        for flag in self.flags:
            if flag.start <= offset < flag.end:
                inside = offset - flag.start if flag.verbatim else 0
                length = min(where.length, len(flag.text) - inside) if flag.verbatim else len(flag.text)
                error.location = FlagLocation(flag.flag, 1, inside + 1, flag.text, max(1, length))
                error.message = error.message.removeprefix(f"sink '{SINK_NAME}': ")
                return error
        return error


@dataclass(frozen=True)
class FlagLocation(Location):
    """A place in a command-line flag's value: shown as ``sqlstream produce FLAG``."""

    def __str__(self) -> str:
        return f"sqlstream produce {self.path}"


PIPELINE_PATH = "<produce>"
SINK_NAME = "published"


def produce_pipeline(args) -> ProducePipeline:
    """The pipeline ``produce`` runs."""
    source: list[tuple[str, str, str | None, str | None]] = [
        ("connector", "generator", None, None), ("rows_per_second", str(args.rate), "--rate", str(args.rate))]
    if args.count is not None:
        source.append(("max_rows", str(args.count), "--count", str(args.count)))
    for item in args.option:
        if "=" not in item:
            raise SqlStreamError(f"-o expects key=value, got '{item}'", hint="e.g. -o fields.temp.min=15")
        key, value = item.split("=", 1)
        source.append((key.strip(), value.strip(), "-o", item))
    sink = [("connector", "nats", None, None), ("url", args.url, "--url", args.url),
            ("subject", args.subject, "SUBJECT", args.subject), ("format", args.format, "--format", args.format)]
    if args.stream:
        sink.append(("stream", args.stream, "--stream", args.stream))
    pipeline = ProducePipeline()
    pipeline.write("CREATE SOURCE generated (")
    pipeline.write(args.columns, "--columns")
    pipeline.write(") WITH (")
    pipeline.options(source)
    pipeline.write(f");\nCREATE SINK {SINK_NAME} AS SELECT * FROM generated WITH (")
    pipeline.options(sink)
    pipeline.write(");\n")
    return pipeline


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
    session = make_session(None, [], [], discover_udfs=False)
    session.settings["dead_letter_path"] = "off"
    pipeline = produce_pipeline(args)
    try:
        session.execute(pipeline.text, path=PIPELINE_PATH)
    except SqlStreamError as error:
        raise pipeline.blame(error) from error.__cause__
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
