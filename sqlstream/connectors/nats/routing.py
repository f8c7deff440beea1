"""Received messages as raw tuples, straight from the protocol parser.

For every message nats-py builds a ``Msg`` object, parses its headers into a dict,
puts it on the subscription's queue and wakes a task that awaits the callback: a
few microseconds of Python per message, on the thread that also reads the socket.
An ingest reader needs none of it — it only hands the bytes to the driver, which
decodes whole batches. :func:`route` registers a plain function that the client
calls with ``(subject, reply, payload, headers)`` (all ``bytes``; ``headers`` the raw
header block or None) for the messages of one subscription, before any of that
work; other subscriptions are untouched.

This hooks ``Client._process_msg`` (the parser's single entry point for messages).
If a nats-py release changes its signature, :func:`can_route` says no and readers
fall back to an ordinary callback that builds the same tuples from ``Msg``.
"""

from __future__ import annotations

import inspect
from typing import Callable

from nats.aio.client import Client

__all__ = ["can_route", "route", "unroute", "Route", "parse_headers", "status_of"]

Route = Callable[[bytes, bytes, bytes, "bytes | None"], None]

_EXPECTED = ["self", "sid", "subject", "reply", "data", "headers"]


def can_route() -> bool:
    method = getattr(Client, "_process_msg", None)
    if method is None or not inspect.iscoroutinefunction(method):
        return False
    return list(inspect.signature(method).parameters) == _EXPECTED


def route(nc: Client, sid: int, handler: Route) -> None:
    """Deliver the messages of subscription ``sid`` to ``handler`` (loop thread)."""
    routes: dict[int, Route] | None = getattr(nc, "_sqlstream_routes", None)
    if routes is None:
        routes = {}
        original = nc._process_msg
        stats = nc.stats

        async def process_msg(sid, subject, reply, data, headers):
            handler = routes.get(sid)
            if handler is None:
                return await original(sid, subject, reply, data, headers)
            stats["in_msgs"] += 1
            stats["in_bytes"] += len(data)
            handler(subject, reply, data, headers)

        nc._process_msg = process_msg
        nc._sqlstream_routes = routes
    routes[sid] = handler


def unroute(nc: Client, sid: int) -> None:
    routes = getattr(nc, "_sqlstream_routes", None)
    if routes is not None:
        routes.pop(sid, None)


def parse_headers(block: bytes | dict | None) -> dict[str, str] | None:
    """A raw ``NATS/1.0`` header block (or an already parsed dict) as a dict."""
    if block is None or isinstance(block, dict):
        return block or None
    lines = block.decode("utf-8", "replace").split("\r\n")
    out: dict[str, str] = {}
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out or None


def status_of(block: bytes | dict | None) -> tuple[str, dict[str, str]]:
    """The inline status code of a server status message ('100', '404', '408', ...)
    and its headers; ('', {}) for an ordinary message."""
    if not block:
        return "", {}
    if isinstance(block, dict):
        return block.get("Status", ""), block
    first, _, _ = block.partition(b"\r\n")
    parts = first.split(b" ", 2)
    code = parts[1].decode() if len(parts) > 1 and parts[1].isdigit() else ""
    headers = parse_headers(block) or {}
    if len(parts) > 2:
        headers.setdefault("Description", parts[2].decode("utf-8", "replace"))
    return code, headers
