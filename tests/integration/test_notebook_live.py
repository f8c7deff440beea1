"""The notebook's live display (:class:`sqlstream.notebook.LiveDisplay`) stops its query on
KeyboardInterrupt (Jupyter's interrupt), and a bad statement in a ``%%sqlstream`` cell is
one clean error line (IPython's UsageError), not a traceback."""

from __future__ import annotations

import _thread
import threading

import pytest

pytest.importorskip("IPython")

from IPython.core.error import UsageError  # noqa: E402
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

from sqlstream import Session  # noqa: E402
from sqlstream.notebook import LiveDisplay, is_bounded  # noqa: E402


def test_keyboard_interrupt_stops_a_live_query(capsys):
    with Session(dead_letter_path="off") as s:
        s.execute("CREATE SOURCE g (id BIGINT) WITH (connector = 'generator', rows_per_second = 100, "
                  "fields.id.kind = 'sequence')")
        result = s.sql("SELECT id FROM g")
        assert not is_bounded(s, result.plan)
        timer = threading.Timer(2.0, _thread.interrupt_main)
        timer.start()
        live = LiveDisplay(result, rows=5)
        table = live.run(None)
        timer.join()
    assert live.state == "stopped (interrupted)"
    assert result.done and table.num_rows > 0
    assert table.column("id").to_pylist() == list(range(table.num_rows))
    assert not any(t.name == "sqlstream-query" and t.is_alive() for t in threading.enumerate())


def test_bounded_sources_and_magic_errors():
    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "sqlstream")
        session = shell.user_ns["sqlstream_session"]
        session.source_from([{"v": 1}, {"v": 2}], name="t")
        assert is_bounded(session, session.sql("SELECT v FROM t").plan)
        table = shell.run_cell_magic("sqlstream", "-o kept", "SELECT sum(v) AS total FROM t;")
        assert shell.user_ns["kept"]["total"].tolist() == [3] and table["total"].tolist() == [3]
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("sqlstream", "", "SELECT nope FROM t;")
        assert "<cell>:1:8: error: unknown column 'nope'" in str(info.value)
        with pytest.raises(UsageError) as info:
            shell.run_cell_magic("sqlstream", "--seconds soon", "SELECT 1;")
        assert "usage: %%sqlstream" in str(info.value)
    finally:
        InteractiveShell.clear_instance()
