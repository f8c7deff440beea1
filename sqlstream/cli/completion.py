"""Tab completion for the REPL: keywords, names in the catalog, columns of the relations
in the statement being typed, functions, connector options inside ``WITH (...)`` and
meta commands.

The statement is read with the dialect's own tokenizer (never with regexes), so strings,
comments and quoted identifiers are understood the way the parser will see them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from sqlglot.errors import TokenError
from sqlglot.tokens import Token, TokenType

from sqlstream.connectors import SINK_CONNECTORS, SOURCE_CONNECTORS
from sqlstream.errors import SqlStreamError
from sqlstream.operators.datafusion_import import SessionConfig, SessionContext
from sqlstream.sql.dialect import SqlStream
from sqlstream.sql.types import sql_type_name

__all__ = ["SqlCompleter", "KEYWORDS", "TYPE_NAMES", "META_COMMANDS", "COMMAND_ALIASES", "as_meta_command",
           "builtin_functions", "statement_complete"]

KEYWORDS = (
    "SELECT", "FROM", "WHERE", "GROUP BY", "HAVING", "ORDER BY", "LIMIT", "AS", "AND", "OR", "NOT", "IN",
    "IS", "NULL", "TRUE", "FALSE", "LIKE", "BETWEEN", "CASE", "WHEN", "THEN", "ELSE", "END", "DISTINCT",
    "JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "INNER JOIN", "ON", "USING", "UNION ALL", "CAST",
    "INTERVAL", "SECOND", "MINUTE", "HOUR", "DAY", "MILLISECOND", "TABLE", "DESCRIPTOR", "PARTITION BY",
    "TUMBLE", "HOP", "CUMULATE", "SESSION", "EMIT ON WINDOW CLOSE", "EMIT EVERY", "OVER",
    "CREATE SOURCE", "CREATE SINK", "CREATE VIEW", "CREATE TABLE", "CREATE FUNCTION", "CREATE OR REPLACE",
    "IF NOT EXISTS", "IF EXISTS", "WATERMARK FOR", "WITH", "AS MODEL", "INSERT INTO", "DROP SOURCE",
    "DROP SINK", "DROP VIEW", "DROP TABLE", "DROP FUNCTION", "SHOW SOURCES", "SHOW SINKS", "SHOW VIEWS",
    "SHOW TABLES", "SHOW FUNCTIONS", "SHOW MODELS", "SHOW CONNECTORS", "SHOW QUERIES", "SHOW WORKERS", "SHOW METRICS", "SHOW WATERMARKS", "SHOW SETTINGS",
    "DESCRIBE", "EXPLAIN", "SET", "STOP QUERY",
)

TYPE_NAMES = (
    "BIGINT", "INT", "INTEGER", "SMALLINT", "DOUBLE", "FLOAT", "REAL", "BOOLEAN", "VARCHAR", "TEXT",
    "TIMESTAMP", "DATE", "DECIMAL", "BYTEA", "NOT NULL",
)

META_COMMANDS = {
    "\\d": "list sources, tables, views, sinks and functions; \\d NAME describes one",
    "\\dt": "list sources, tables and views (also .tables)",
    "\\df": "list functions",
    "\\x": "expanded display: one line per column (on|off)",
    "\\i": "run the statements of FILE (also .read FILE)",
    "\\e": "edit the last statement in $EDITOR, then run it",
    "\\timing": "show how long each statement took (on|off)",
    "\\o": "write query results to FILE (\\o alone: back to the terminal)",
    "\\format": "output format: table | json | csv | expanded",
    "\\mode": "result mode: table | changelog | tableau",
    "\\save_test": "write the session's DDL, the last query and its result as a pipeline test",
    "\\workers": "the worker group of the partitioned source: workers, partition owners (SHOW WORKERS)",
    "\\q": "quit (also exit, quit, .exit, .quit)",
    "\\?": "this help (also help, .help)",
}

#: words and sqlite-style dot commands that stand for a backslash command
COMMAND_ALIASES = {
    "exit": "\\q", "quit": "\\q", "help": "\\?", ".exit": "\\q", ".quit": "\\q", ".help": "\\?",
    ".tables": "\\dt", ".read": "\\i", ".schema": "\\d",
}


def as_meta_command(line: str) -> str | None:
    """``line`` as a backslash command when it is one, or a word or dot command that
    stands for one (``exit``, ``.tables``, ``.read FILE``); None for SQL."""
    stripped = line.strip()
    if stripped.startswith("\\"):
        return stripped
    word, _, rest = stripped.rstrip(";").strip().partition(" ")
    alias = COMMAND_ALIASES.get(word.lower())
    if alias is not None and (word.startswith(".") or not rest.strip()):
        return f"{alias} {rest.strip()}".rstrip()
    if word.startswith(".") and len(word) > 1 and word[1:].isalpha():
        return word  # an unknown dot command: reported as one
    return None


_WINDOW_FUNCTIONS = ("tumble", "hop", "cumulate", "session")
_RELATION_BEFORE = {"FROM", "JOIN", "DESCRIBE", "TABLE", "EXPLAIN"}  # the next word names a relation
_AFTER_DROP = {"SOURCE": "source", "TABLE": "table", "VIEW": "view", "SINK": "sink", "FUNCTION": "function"}
_WORD = re.compile(r"[A-Za-z0-9_.]*$")  # the word under the cursor (not SQL parsing)


def _tokens(text: str) -> list[Token] | None:
    """The tokens of ``text``, or None while a string/comment/quoted name is still open."""
    try:
        return SqlStream().tokenizer().tokenize(text)
    except TokenError:
        return None


def statement_complete(text: str) -> bool:
    """True when ``text`` ends with a ``;`` outside strings and comments (or holds no SQL)."""
    tokens = _tokens(text)
    if tokens is None:
        return False
    return not tokens or tokens[-1].token_type == TokenType.SEMICOLON


@functools.lru_cache(maxsize=1)
def builtin_functions() -> tuple[str, ...]:
    """DataFusion's scalar, aggregate and window functions (asked once per process)."""
    ctx = SessionContext(SessionConfig().with_information_schema(True))
    table = ctx.sql("SELECT DISTINCT routine_name FROM information_schema.routines").to_arrow_table()
    names = {n for n in table.column(0).to_pylist() if n and n.isidentifier()}
    return tuple(sorted(names | set(_WINDOW_FUNCTIONS)))


@dataclass
class _Candidate:
    text: str
    meta: str
    rank: int  # lower first


class SqlCompleter(Completer):
    """Completions from a live :class:`~sqlstream.session.Session` (its catalog changes as
    the user types DDL, so nothing is cached but the built-in function list)."""

    def __init__(self, session):
        self.session = session

    # -- catalog ------------------------------------------------------------------------------

    def relations(self) -> dict[str, str]:
        s = self.session
        out = {name: e.kind.lower() for name, e in s.sources.items()}
        out.update({name: "view" for name in s.views})
        return out

    def names_of(self, kind: str) -> list[str]:
        s = self.session
        if kind in ("source", "table"):
            return [n for n, e in s.sources.items() if e.kind.lower() == kind and e.statement is not None]
        return list({"view": s.views, "sink": s.sinks, "function": s.functions}[kind])

    def columns_of(self, relation: str) -> list[tuple[str, str]]:
        try:
            schema = self.session.schema_of(relation)
        except Exception:  # noqa: BLE001 - a name that does not resolve has no columns to offer
            return []
        return [(f.name, sql_type_name(f.type)) for f in schema if not f.name.startswith("__")]

    # -- completion ---------------------------------------------------------------------------

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        try:
            yield from self._completions(document)
        except SqlStreamError:
            return  # e.g. a plugin that fails to load: running the statement reports it, completing offers nothing

    def _completions(self, document: Document) -> Iterator[Completion]:
        before = document.text_before_cursor
        word = _WORD.search(before).group(0)
        if before.lstrip().startswith("\\"):
            yield from self._meta(before, word)
            return
        statement_start = _statement_start(before)
        head = before[statement_start : len(before) - len(word)]
        after = document.text_after_cursor
        statement = before[statement_start:] + after[: _statement_end(after)]
        tokens = _tokens(head)
        if tokens is None:  # inside a string: perhaps a connector name or an option's choice
            yield from self._in_string(before[statement_start:])
            return
        for candidate in self._candidates(tokens, statement, word):
            yield Completion(candidate.text, start_position=-len(word), display_meta=candidate.meta)

    def _candidates(self, tokens: list[Token], statement: str, word: str) -> list[_Candidate]:
        with_options = _open_with(tokens)
        if with_options is not None:
            return self._filter(self._options(tokens, with_options, statement), word)
        previous = tokens[-1] if tokens else None
        if "." in word:
            qualifier, _, _ = word.rpartition(".")
            return self._qualified(qualifier, word, statement)
        if previous is not None:
            upper = previous.text.upper()
            if len(tokens) >= 2 and tokens[-2].text.upper() == "DROP" and upper in _AFTER_DROP:
                return self._filter([_Candidate(n, _AFTER_DROP[upper], 0) for n in self.names_of(_AFTER_DROP[upper])], word)
            if upper == "INTO":
                return self._filter([_Candidate(n, "sink", 0) for n in self.session.sinks], word)
            if upper in _RELATION_BEFORE or (upper == "(" and len(tokens) >= 2 and tokens[-2].text.lower() in _WINDOW_FUNCTIONS):
                found = [_Candidate(n, k, 0) for n, k in self.relations().items()]
                if upper in ("FROM", "JOIN"):
                    found += [_Candidate(f.upper(), "window function", 1) for f in _WINDOW_FUNCTIONS]
                return self._filter(found, word)
        if _wants_type(tokens):
            return self._filter([_Candidate(t, "type", 0) for t in TYPE_NAMES], word)
        found = []
        named = _relations_in(statement, self.relations())
        for relation in named or self.relations():  # no FROM yet: columns of every relation
            for name, type_name in self.columns_of(relation):
                found.append(_Candidate(name, f"{relation}.{name} {type_name}", 0 if named else 2))
        if _windowed(statement):
            found += [_Candidate(c, "window column", 0) for c in ("window_start", "window_end")]
        for name, entry in self.session.functions.items():
            found.append(_Candidate(name, f"{entry.kind} function", 1))
        if word:
            found += [_Candidate(n, "function", 2) for n in builtin_functions()]
        found += [_Candidate(k, "keyword", 3) for k in KEYWORDS]
        found += [_Candidate(n, k, 4) for n, k in self.relations().items()]
        return self._filter(found, word)

    def _filter(self, candidates: Iterable[_Candidate], word: str) -> list[_Candidate]:
        lower = word.lower()
        seen: set[str] = set()
        out = []
        for c in sorted(candidates, key=lambda c: (c.rank, c.text.lower())):
            if not c.text.lower().startswith(lower) or c.text.lower() in seen:
                continue
            if c.text.lower() == lower and c.meta == "keyword":
                continue
            seen.add(c.text.lower())
            text = c.text
            if c.meta == "keyword" and word and word.islower():
                text = text.lower()
            out.append(_Candidate(text, c.meta, c.rank))
        return out

    def _qualified(self, qualifier: str, word: str, statement: str) -> list[_Candidate]:
        aliases = _aliases(statement, self.relations())
        relation = aliases.get(qualifier.lower())
        if relation is None:
            return []
        prefix = qualifier + "."
        columns = [_Candidate(prefix + n, f"{relation}.{n} {t}", 0) for n, t in self.columns_of(relation)]
        return self._filter(columns, word)

    # -- WITH (...) options ---------------------------------------------------------------------

    def _options(self, tokens: list[Token], open_at: int, statement: str) -> list[_Candidate]:
        inside = tokens[open_at + 1 :]
        if inside and inside[-1].token_type == TokenType.EQ:
            return []  # a value comes next: offered inside the quotes
        given = {t.text.lower() for i, t in enumerate(inside) if i + 1 < len(inside) and inside[i + 1].token_type == TokenType.EQ}
        kind = _created_kind(tokens)
        registry = SINK_CONNECTORS if kind == "SINK" else SOURCE_CONNECTORS
        connector = _option_value(inside, "connector")
        if connector is None or connector.lower() not in registry:
            return [_Candidate("connector", "connector = '" + "' | '".join(sorted(registry)) + "'", 0)]
        options = registry[connector.lower()].all_options()
        columns = _declared_columns(statement)
        found = []
        for spec in options:
            names = [spec.name.replace("*", col) for col in columns] if "*" in spec.name else [spec.name]
            for name in names:
                if name.lower() not in given:
                    found.append(_Candidate(name, spec.doc or "option", 1 if "." in name else 0))
        return found

    def _in_string(self, head: str) -> Iterator[Completion]:
        quote = head.rfind("'")
        if quote < 0:
            return
        tokens = _tokens(head[:quote])
        if not tokens or _open_with(tokens) is None or tokens[-1].token_type != TokenType.EQ or len(tokens) < 2:
            return
        key = tokens[-2].text.lower()
        registry = SINK_CONNECTORS if _created_kind(tokens) == "SINK" else SOURCE_CONNECTORS
        typed = head[quote + 1 :]
        if key == "connector":
            values = sorted(n for n in registry if n != "memory")
        else:
            connector = _option_value(tokens[_open_with(tokens) + 1 :], "connector")
            cls = registry.get((connector or "").lower())
            spec = next((o for o in cls.all_options() if o.name == key), None) if cls else None
            values = list(spec.choices) if spec is not None and spec.choices else []
        for value in values:
            if value.startswith(typed):
                yield Completion(value + "'", start_position=-len(typed), display_meta=key)

    # -- meta commands --------------------------------------------------------------------------

    def _meta(self, before: str, word: str) -> Iterator[Completion]:
        parts = before.lstrip().split()
        if len(parts) <= 1 and not before.endswith(" "):
            typed = parts[0] if parts else "\\"
            for command, about in META_COMMANDS.items():
                if command.startswith(typed):
                    yield Completion(command, start_position=-len(typed), display_meta=about)
            return
        command = parts[0]
        choices = {
            "\\format": ["table", "json", "csv"],
            "\\mode": ["table", "changelog", "tableau"],
            "\\timing": ["on", "off"],
            "\\d": list(self.relations()) + list(self.session.sinks) + list(self.session.functions),
        }.get(command, [])
        for choice in choices:
            if choice.startswith(word):
                yield Completion(choice, start_position=-len(word))


# -- reading the statement under the cursor ---------------------------------------------------------


def _statement_start(text: str) -> int:
    """Offset where the statement under the cursor begins (after the last ``;``)."""
    tokens = _tokens(text)
    if tokens is None:
        # an open string or comment: the statement started before it; find the last ';' before that
        cut = max(text.rfind("'"), text.rfind('"'), text.rfind("/*"))
        tokens = _tokens(text[:cut]) if cut > 0 else []
        tokens = tokens or []
    ends = [t.end + 1 for t in tokens if t.token_type == TokenType.SEMICOLON]
    return ends[-1] if ends else 0


def _statement_end(text: str) -> int:
    tokens = _tokens(text)
    if not tokens:
        return len(text)
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            return token.start
    return len(text)


def _open_with(tokens: list[Token]) -> int | None:
    """Index of the ``(`` after ``WITH`` of a CREATE statement when the cursor is inside it."""
    if not tokens or tokens[0].token_type != TokenType.CREATE:
        return None
    depth = 0
    open_at = None
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.L_PAREN:
            depth += 1
            if i > 0 and tokens[i - 1].token_type == TokenType.WITH and depth == 1:
                open_at = i
        elif token.token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                open_at = None
    return open_at


def _wants_type(tokens: list[Token]) -> bool:
    """After ``::``, after ``AS`` inside CAST(...), or after a column name in CREATE's column list."""
    if not tokens:
        return False
    previous = tokens[-1]
    if previous.token_type == TokenType.DCOLON:
        return True
    depth = 0
    for token in tokens:
        depth += token.token_type == TokenType.L_PAREN
        depth -= token.token_type == TokenType.R_PAREN
    if previous.token_type == TokenType.ALIAS and depth > 0:
        return True
    before = tokens[-2].token_type if len(tokens) >= 2 else None
    return (
        tokens[0].token_type == TokenType.CREATE
        and depth == 1
        and before in (TokenType.L_PAREN, TokenType.COMMA)
        and _open_with(tokens) is None
        and previous.token_type in (TokenType.VAR, TokenType.IDENTIFIER)
    )


def _created_kind(tokens: list[Token]) -> str:
    for token in tokens[1:4]:
        if token.text.upper() in ("SOURCE", "SINK", "TABLE", "VIEW", "FUNCTION"):
            return token.text.upper()
    return ""


def _option_value(tokens: list[Token], key: str) -> str | None:
    for i, token in enumerate(tokens[:-2]):
        if token.text.lower() == key and tokens[i + 1].token_type == TokenType.EQ:
            return tokens[i + 2].text
    return None


def _declared_columns(statement: str) -> list[str]:
    """Column names in ``CREATE SOURCE name (col TYPE, ...)``, read from its tokens."""
    tokens = _tokens(statement) or []
    start = next((i for i, t in enumerate(tokens) if t.token_type == TokenType.L_PAREN), None)
    if start is None or tokens[start - 1].token_type == TokenType.WITH:
        return []
    columns: list[str] = []
    depth = 0
    expect_name = True
    for token in tokens[start + 1 :]:
        if token.token_type == TokenType.L_PAREN:
            depth += 1
        elif token.token_type == TokenType.R_PAREN:
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and token.token_type == TokenType.COMMA:
            expect_name = True
        elif depth == 0 and expect_name:
            expect_name = False
            if token.text.upper() != "WATERMARK":
                columns.append(_name(token))
    return columns


def _name(token: Token) -> str:
    """An identifier as the catalog spells it (Postgres rules: unquoted folds to lower case)."""
    return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()


def _relation_tokens(statement: str, known: dict[str, str]) -> list[tuple[str, str | None]]:
    """(relation, alias) for every known relation named after FROM/JOIN/TUMBLE(...)."""
    tokens = _tokens(statement) or []
    found = []
    for i, token in enumerate(tokens):
        name = _name(token)
        if name not in known or i == 0:
            continue
        before = tokens[i - 1].text.upper()
        window_arg = before in ("(", "TABLE") and i >= 2 and tokens[i - 2].text.lower() in (*_WINDOW_FUNCTIONS, "(")
        if before not in ("FROM", "JOIN", ",") and not window_arg:
            continue
        alias = None
        rest = tokens[i + 1 : i + 3]
        if rest and rest[0].token_type == TokenType.ALIAS and len(rest) > 1:
            alias = rest[1].text.lower()
        elif rest and rest[0].token_type == TokenType.VAR:
            alias = rest[0].text.lower()
        found.append((name, alias))
    return found


def _relations_in(statement: str, known: dict[str, str]) -> list[str]:
    names: list[str] = []
    for name, _ in _relation_tokens(statement, known):
        if name not in names:
            names.append(name)
    return names


def _aliases(statement: str, known: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, alias in _relation_tokens(statement, known):
        out[name] = name
        if alias:
            out[alias] = name
    return out


def _windowed(statement: str) -> bool:
    tokens = _tokens(statement) or []
    return any(
        t.text.lower() in _WINDOW_FUNCTIONS and i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.L_PAREN
        for i, t in enumerate(tokens)
    )
