"""Bad options and unreachable servers: each is an error that says what is wrong and
where (``file.sql:line:col: error: ...``), never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from conftest import BackgroundRun

from sqlstream import Session
from sqlstream.errors import ConnectorError, SqlStreamError

pytestmark = pytest.mark.nats

URL = "nats://127.0.0.1:4222"  # never contacted: these fail at CREATE


def _create(sql: str, tmp_path=None) -> ConnectorError:
    session = Session(base_dir=str(tmp_path or "."), dead_letter_path="off")
    with pytest.raises(SqlStreamError) as caught:
        session.execute(sql, path="pipeline.sql")
    return caught.value


@pytest.mark.parametrize(
    "columns, options, message, hint",
    [
        ("id BIGINT", "", "connector 'nats' needs option 'subject'", "stream = '...'"),
        ("id BIGINT", ", subjet = 'a'", "unknown option 'subjet' for connector 'nats'", "did you mean 'subject'?"),
        ("id BIGINT", ", subject = 'a', durable = 'd'", "option 'durable' applies to JetStream only", "add stream"),
        ("id BIGINT", ", subject = 'a', ack_wait = '5s'", "option 'ack_wait' applies to JetStream only", "add stream"),
        ("id BIGINT", ", stream = 'S', queue = 'q'", "option 'queue' applies to core NATS only", "durable consumer"),
        ("id BIGINT", ", subject = 'a b'", "option 'subject' = 'a b' is invalid for connector 'nats': "
         "not a NATS subject (tokens separated by '.', no spaces)", None),
        ("id BIGINT", ", subject = 'a', format = 'xml'", "option 'format' = 'xml' is invalid for connector 'nats': "
         "expected one of 'json', 'csv', 'arrow', 'raw'", "payload format"),
        ("id BIGINT", ", stream = 'S', max_ack_pending = 0",
         "option 'max_ack_pending' = 0 is invalid for connector 'nats': must be > 0, or -1 for no limit", None),
        ("id BIGINT, _headers VARCHAR", ", subject = 'a'", "metadata column '_headers' must be declared MAP(VARCHAR, VARCHAR)",
         None),
        ("id BIGINT, _received_at BIGINT", ", subject = 'a'", "metadata column '_received_at' must be declared TIMESTAMP",
         None),
        ("id BIGINT, _stream_seq BIGINT", ", subject = 'a'", "metadata column '_stream_seq' needs JetStream",
         "add stream"),
        ("a VARCHAR, b VARCHAR", ", subject = 'a', format = 'raw'",
         "format = 'raw' needs exactly one column (besides metadata columns), of type VARCHAR or BYTEA", "format = 'raw'"),
        ("_subject VARCHAR", ", subject = 'a'", "a nats source needs at least one column besides metadata columns", None),
    ],
)
def test_source_option_errors(columns, options, message, hint):
    error = _create(f"\n\nCREATE SOURCE s ({columns}) WITH (connector = 'nats', url = '{URL}'{options});")
    assert isinstance(error, ConnectorError)
    assert error.message == message
    if hint:
        assert hint in error.hint
    assert error.location is not None and error.location.path == "pipeline.sql" and error.location.line >= 3


def test_bad_url_is_an_option_error():
    error = _create("CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = 'localhost:4222', subject = 'a');")
    assert error.message == (
        "option 'url' = 'localhost:4222' is invalid for connector 'nats': "
        "expected nats://host:port (several: comma-separated)"
    )


@pytest.mark.parametrize(
    "subject, message",
    [
        ("alerts.{", "option 'subject' = 'alerts.{': bad subject template: Single '{' encountered in format string"),
        ("alerts.{}", "option 'subject' = 'alerts.{}': bad subject template: '{}' needs a column name, e.g. '{sensor_id}'"),
        ("alerts.*", "option 'subject' = 'alerts.*' is invalid for connector 'nats': "
         "a published subject cannot contain wildcards"),
        ("alerts..x", "option 'subject' = 'alerts..x' is invalid for connector 'nats': "
         "not a NATS subject (tokens separated by '.', no spaces)"),
    ],
)
def test_sink_subject_errors(subject, message):
    error = _create(
        "CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', subject = 'in');\n"
        f"CREATE SINK o AS SELECT id FROM s WITH (connector = 'nats', subject = '{subject}');"
    )
    assert error.message == message
    assert error.location.line == 2


def test_a_nats_table_is_refused():
    error = _create("CREATE TABLE t (id BIGINT) WITH (connector = 'nats', subject = 'a');")
    assert error.message == "a TABLE is bounded reference data; connector 'nats' is a stream"


def test_check_prints_file_line_col_and_exits_2(tmp_path):
    path = tmp_path / "bad.sql"
    path.write_text("-- a pipeline\nCREATE SOURCE s (id BIGINT)\n  WITH (connector = 'nats', subject = 'a', durable = 'd');\n")
    result = subprocess.run([sys.executable, "-m", "sqlstream.cli.main", "check", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{path}:2:" in result.stderr
    assert "error: option 'durable' applies to JetStream only" in result.stderr
    assert "hint: add stream = '<stream name>'" in result.stderr
    assert "Traceback" not in result.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_a_runtime_error_naming_the_url(tmp_path):
    url = f"nats://127.0.0.1:{_closed_port()}"
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(f"""
        CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = '{url}', subject = 'a', connect_timeout = '300ms');
        CREATE SINK o AS SELECT id FROM s WITH (connector = 'stdout');
    """)
    with pytest.raises(ConnectorError) as caught:
        session.run()
    error = caught.value
    assert error.message.startswith(f"source 's': cannot connect to NATS at {url}: ")
    assert error.message.endswith("(tried for 0.3s)")
    assert "start nats-server" in error.hint
    assert error.exit_code == 1


def test_missing_streams_and_unknown_template_columns(tmp_path, nats_server, nats_client):
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(f"""
        CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'NO_SUCH_STREAM');
        CREATE SINK o AS SELECT id FROM s WITH (connector = 'stdout');
    """)
    with pytest.raises(ConnectorError) as caught:
        session.run()
    assert caught.value.message == f"source 's': JetStream stream 'NO_SUCH_STREAM' does not exist on {nats_server.url}"
    assert "create it first" in caught.value.hint

    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(f"CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', subject = 'opt.in')")
    with pytest.raises(ConnectorError) as caught:  # found at CREATE (sqlstream check), not when the run starts
        session.execute(f"CREATE SINK o AS SELECT id FROM s WITH (connector = 'nats', url = '{nats_server.url}', "
                        "subject = 'o.{ID_X}')")
    assert caught.value.message == "sink 'o': subject 'o.{ID_X}' names column 'id_x', which the query does not produce"
    assert caught.value.hint == "did you mean 'id'?"
    where = caught.value.location
    assert where.text[where.col - 1:].startswith("subject = ")  # at the subject option


def test_publishing_to_a_subject_no_stream_stores_fails_loudly(tmp_path, nats_server, nats_client):
    nats_client.add_stream("OPT_OUT", ["opt.out.stored"])
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(f"""
        CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', subject = 'opt.nostream');
        CREATE SINK o AS SELECT id FROM s
        WITH (connector = 'nats', url = '{nats_server.url}', subject = 'opt.out.elsewhere', stream = 'OPT_OUT');
    """)
    run = BackgroundRun(session)
    nats_client.publish("opt.nostream", [b'{"id": 1}'])
    with pytest.raises(ConnectorError) as caught:
        run.wait_finished(30)
    assert caught.value.message == "sink 'o': no JetStream stream stores subject 'opt.out.elsewhere'"
    assert "stream 'OPT_OUT'" in caught.value.hint


def test_an_existing_durable_is_updated_or_refused(tmp_path, nats_server, nats_client):
    nats_client.add_stream("OPT_DUR", ["optdur.a", "optdur.b"])
    for subject, ack_wait, fails in (("optdur.a", "", False), ("optdur.a", ", ack_wait = '45s'", False),
                                     ("optdur.b", "", True)):
        session = Session(base_dir=str(tmp_path), dead_letter_path="off")
        session.execute(f"""
            CREATE SOURCE s (id BIGINT) WITH (connector = 'nats', url = '{nats_server.url}', stream = 'OPT_DUR',
                                              subject = '{subject}', durable = 'shared'{ack_wait});
            CREATE SINK o AS SELECT id FROM s WITH (connector = 'stdout');
        """)
        if not fails:
            BackgroundRun(session).stop()
            assert nats_client.consumer_info("OPT_DUR", "shared").config.ack_wait == (45 if ack_wait else 30)
            continue
        with pytest.raises(ConnectorError) as caught:
            session.run()
        assert caught.value.message == (
            "source 's': durable consumer 'shared' on stream 'OPT_DUR' filters subject 'optdur.a', not 'optdur.b'"
        )
