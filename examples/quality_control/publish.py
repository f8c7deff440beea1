"""Publish the photos in ``frames/`` to JetStream, one raw JPEG per message, on
``camera.<line>.<part>`` (``part_0001.jpg`` → ``camera.line1.part_0001``); creates the
stream ``CAMERA`` (subjects ``camera.>``) when it is missing.

    python publish.py [--url nats://127.0.0.1:4222] [--frames frames] [--line line1] [--stream CAMERA] [FILE ...]

With FILEs, publishes those instead of the folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re

import nats
import nats.js.errors


def subject_for(line: str, name: str) -> str:
    """The subject of one photo: its file name without the extension, other characters
    than letters, digits, ``_`` and ``-`` replaced (a ``.`` would add a subject level)."""
    part = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(name)[0])
    return f"camera.{line}.{part}"


async def publish(url: str, paths: list[str], line: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=stream, subjects=["camera.>"])
        for path in paths:
            with open(path, "rb") as handle:
                await js.publish_async(subject_for(line, os.path.basename(path)), handle.read())
        await js.publish_async_completed()
        return len(paths)
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--frames", default="frames")
    parser.add_argument("--line", default="line1")
    parser.add_argument("--stream", default="CAMERA")
    parser.add_argument("files", nargs="*", help="publish these files instead of the folder")
    args = parser.parse_args(argv)
    paths = args.files or [os.path.join(args.frames, n) for n in sorted(os.listdir(args.frames)) if not n.startswith(".")]
    count = asyncio.run(publish(args.url, paths, args.line, args.stream))
    print(f"{count} photos published to stream {args.stream} on camera.{args.line}.*")


if __name__ == "__main__":
    main()
