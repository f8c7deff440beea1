"""No broken links in the documentation.

Every relative Markdown link in README.md, docs/**/*.md and examples/**/README.md must point
at a file or folder that exists, and a ``#anchor`` into a Markdown file must be produced by
one of its headings (GitHub's rules: lower-case, spaces become ``-``, punctuation other than
``-`` and ``_`` is dropped; a repeated heading gets ``-1``, ``-2``, ...). Paths written in
backticks that look like documentation files (``docs/....md``) must exist too, so a reference
in prose cannot rot either.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the text may contain `code` and nested [brackets].
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
DOC_PATH_IN_CODE = re.compile(r"`((?:\.\./)*docs/[A-Za-z0-9_./-]+\.md)(?:#[^`]*)?`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    files += sorted((ROOT / "examples").rglob("README.md"))
    return [f for f in files if f.is_file()]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, line))
    return out


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def _links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for match in DOC_PATH_IN_CODE.finditer(line):
            found.append((number, "code:" + match.group(1)))
        for match in LINK.finditer(INLINE_CODE.sub(lambda m: "x" * len(m.group()), line)):
            found.append((number, line[match.start(1) : match.end(1)]))
    return found


def _problems(path: Path) -> list[str]:
    problems = []
    for number, target in _links(path):
        where = f"{path.relative_to(ROOT)}:{number}: {target}"
        if target.startswith("code:"):
            # a prose mention of a docs page: relative to the repository root
            if not (ROOT / target[len("code:") :]).exists() and not (path.parent / target[len("code:") :]).exists():
                problems.append(f"{where} (no such file)")
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not destination.exists():
            problems.append(f"{where} (no such file)")
            continue
        if anchor and destination.suffix == ".md":
            if unquote(anchor).lower() not in anchors(destination):
                problems.append(f"{where} (no heading makes #{anchor})")
    return problems


def test_slug_rules():
    assert github_slug("Interactive SQL: `sqlstream repl`") == "interactive-sql-sqlstream-repl"
    assert github_slug("From exploring to a regression test: `\\save_test`") == (
        "from-exploring-to-a-regression-test-save_test"
    )
    assert github_slug("Event time, windows and incremental aggregation") == (
        "event-time-windows-and-incremental-aggregation"
    )


def test_the_documentation_is_found():
    names = {str(f.relative_to(ROOT)) for f in _markdown_files()}
    assert {"README.md", "docs/nats.md", "examples/nats_sensors/README.md"} <= names


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert _problems(path) == []
