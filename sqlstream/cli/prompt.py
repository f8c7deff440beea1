"""The REPL's prompt (prompt_toolkit): multi-line input until ``;``, history in
``$SQLSTREAM_HISTORY`` or ``~/.sqlstream_history``, Ctrl-R, SQL highlighting and Tab
completion."""

from __future__ import annotations

import os

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, get_common_complete_suffix
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import PygmentsLexer
from pygments.lexers.sql import SqlLexer

from sqlstream.cli.completion import SqlCompleter, as_meta_command, statement_complete
from sqlstream.session import Session

__all__ = ["make_prompt_session", "history_path", "PROMPT", "CONTINUATION", "HISTORY_ENV"]

PROMPT = "sqlstream> "
CONTINUATION = "...> "
HISTORY_ENV = "SQLSTREAM_HISTORY"


def history_path() -> str:
    """``$SQLSTREAM_HISTORY``, else ``~/.sqlstream_history``."""
    return os.environ.get(HISTORY_ENV) or os.path.join(os.path.expanduser("~"), ".sqlstream_history")


def _input_complete(text: str) -> bool:
    stripped = text.strip()
    return not stripped or as_meta_command(stripped) is not None or statement_complete(text)


def make_prompt_session(session: Session, *, input=None, output=None, history: str | None = None):
    """The prompt_toolkit session: multi-line until ``;``, history, Ctrl-R, highlighting, completion."""
    path = history or history_path()
    try:
        with open(path, "a", encoding="utf-8"):
            pass
        store = FileHistory(path)
    except OSError:
        store = InMemoryHistory()

    prompt_session = None

    @Condition
    def continues() -> bool:
        """Enter adds a line until the statement is complete. (The main buffer is asked,
        not the current one: during Ctrl-R the current buffer is the search text.)"""
        return prompt_session is None or not _input_complete(prompt_session.default_buffer.text)

    def continuation(width: int, line_number: int, wrap_count: int) -> str:
        return CONTINUATION.rjust(width)

    completer = SqlCompleter(session)
    bindings = KeyBindings()

    @bindings.add("tab")
    def complete(event) -> None:
        """Complete at once: a single candidate is inserted, several show a menu."""
        buffer = event.current_buffer
        if buffer.complete_state:
            buffer.complete_next()
            return
        found = list(completer.get_completions(buffer.document, CompleteEvent(completion_requested=True)))
        if len(found) == 1:
            buffer.apply_completion(found[0])
        elif found:
            common = get_common_complete_suffix(buffer.document, found)
            if common:
                buffer.insert_text(common)
            else:
                buffer.start_completion(insert_common_part=False)

    prompt_session = PromptSession(
        PROMPT,
        key_bindings=bindings,
        multiline=continues,
        prompt_continuation=continuation,
        history=store,
        lexer=PygmentsLexer(SqlLexer),
        completer=completer,
        complete_while_typing=False,
        enable_history_search=False,
        input=input,
        output=output,
    )
    return prompt_session
