"""Partitioned JetStream sources without a server: the options, the subject layout,
and the check that refuses queries needing a shuffle, located and with a hint
(docs/scale-out.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sqlstream import Session
from sqlstream.connectors.nats.partitions import PartitionLayout
from sqlstream.errors import ConnectorError, ExecutionError, FencedCheckpointError, UnsupportedSqlError
from sqlstream.plan.partitioning import exchanges_of

SOURCE = """CREATE SOURCE o (customer_id BIGINT, region VARCHAR, amount DOUBLE, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
  WITH (connector = 'nats', stream = 'O', subject = 'shop.{region}.{customer_id}', partitions = 8,
        partition_by = 'customer_id');
CREATE TABLE regions (region VARCHAR, name VARCHAR) WITH (connector = 'file', path = 'regions.csv', format = 'csv');
"""


def _session(tmp_path) -> Session:
    (tmp_path / "regions.csv").write_text("region,name\neu,Europe\n")
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute(SOURCE)
    return session


def test_the_layout_puts_the_partition_before_the_first_wildcard():
    layout = PartitionLayout.parse("shop.{region}.{customer_id}", 8, "customer_id")
    assert layout.stream_subject == "shop.*.*"
    assert layout.transform_dest == "shop.{{partition(8,2)}}.{{wildcard(1)}}.{{wildcard(2)}}"
    assert layout.subject_of(5) == "shop.5.*.*"
    assert layout.all_partitions == "shop.*.*.*"


@pytest.mark.parametrize("options, message", [
    ("subject = 'o.{customer_id}', partitions = 4", "a partitioned source needs 'subject' with the partition key "
     "as a column token, and 'partition_by'"),
    ("subject = 'o.*', partition_by = 'customer_id'", "option 'partition_by' needs 'partitions'"),
    ("subject = 'o.{customer_id}'", "option 'subject' = 'o.{customer_id}': column tokens ('{column}') are for "
     "partitioned sources"),
    ("subject = 'o.*', partitions = 4, partition_by = 'customer_id'",
     "option 'partition_by' = 'customer_id' is not a column token of subject 'o.*'"),
    ("subject = 'o.{region}', partitions = 4, partition_by = 'region'",
     "option 'partition_by' = 'region' is not a declared column of source 's'"),
    ("subject = 'o.{customer_id}.>', partitions = 4, partition_by = 'customer_id'",
     "option 'subject' = 'o.{customer_id}.>': token '>' is not a literal, '*' or '{column}'"),
    ("subject = 'o.{customer_id}', partitions = 5000, partition_by = 'customer_id'",
     "option 'partitions' must be between 1 and 1024"),
    ("subject = 'o.*', replicas = 3", "option 'replicas' applies to a partitioned source (whose stream sqlstream "
     "creates)"),
    ("subject = 'o.{customer_id}', partitions = 4, partition_by = 'customer_id', replicas = 7",
     "option 'replicas' = 7 is invalid for connector 'nats': must be between 1 and 5 (JetStream's limit)"),
])
def test_bad_partition_options_are_located_errors(tmp_path, options, message):
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    with pytest.raises(ConnectorError) as caught:
        session.execute(f"CREATE SOURCE s (customer_id BIGINT)\n  WITH (connector = 'nats', stream = 'S', {options});")
    assert caught.value.message == message
    assert caught.value.location is not None


def test_partitions_need_jetstream(tmp_path):
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    with pytest.raises(ConnectorError) as caught:
        session.execute("CREATE SOURCE s (k BIGINT) WITH (connector = 'nats', subject = 'o.{k}', partitions = 2, "
                        "partition_by = 'k');")
    assert caught.value.message == "option 'partitions' applies to JetStream only"


@pytest.mark.parametrize("query", [
    "SELECT customer_id, amount * 2 AS doubled FROM o WHERE amount > 1",
    "SELECT window_start, window_end, customer_id, count(*) AS n FROM TUMBLE(o, ts, INTERVAL '10' SECOND) "
    "GROUP BY window_start, window_end, customer_id",
    "SELECT region, customer_id, sum(amount) AS total FROM o GROUP BY region, customer_id",
    "SELECT c, n FROM (SELECT customer_id AS c, count(*) AS n FROM o GROUP BY customer_id) t WHERE n > 2",
    "SELECT DISTINCT customer_id, region FROM o",
    "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY ts) AS rn FROM o) WHERE rn = 1",
    "SELECT o.customer_id, r.name, count(*) AS n FROM o JOIN regions r ON o.region = r.region "
    "GROUP BY o.customer_id, r.name",
    "SELECT a.customer_id, b.amount FROM o a JOIN o b ON a.customer_id = b.customer_id",
    "SELECT a.customer_id, count(*) AS n FROM o a JOIN o b ON a.customer_id = b.customer_id "
    "AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND GROUP BY a.customer_id",
])
def test_queries_keyed_by_the_partition_key_run_partition_by_partition(tmp_path, query):
    session = _session(tmp_path)
    session.execute(f"CREATE SINK out AS {query} WITH (connector = 'stdout');")
    assert not exchanges_of(session.sinks["out"].plan)


@pytest.mark.parametrize("query, exchange", [
    ("SELECT region, count(*) AS n FROM o GROUP BY region", "Exchange hash(__k0) across the partitions of 'o'"),
    ("SELECT window_start, window_end, region, count(*) AS n FROM TUMBLE(o, ts, INTERVAL '10' SECOND) "
     "GROUP BY window_start, window_end, region", "Exchange hash(__k0) across the partitions of 'o'"),
    # a column named like the partition key is not the partition key
    ("SELECT customer_id, count(*) AS n FROM (SELECT region AS customer_id FROM o) t GROUP BY customer_id",
     "Exchange hash(__k0) across the partitions of 'o'"),
    # an expression of the partition key is not the key: customers 3 and 13 share 'c' but not a partition
    ("SELECT c, count(*) AS n FROM (SELECT customer_id % 10 AS c FROM o) t GROUP BY c",
     "Exchange hash(__k0) across the partitions of 'o'"),
    ("SELECT count(*) AS n FROM o", "Exchange to partition 0 of 'o'"),
    ("SELECT window_start, count(*) AS n FROM TUMBLE(o, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
     "Exchange to partition 0 of 'o'"),
    ("SELECT * FROM o LIMIT 5", "Exchange to partition 0 of 'o'"),
    ("SELECT a.region, a.amount AS x, b.amount AS y FROM o a JOIN o b ON a.region = b.region "
     "AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND", "Exchange hash(region) across the partitions of 'o'"),
    ("SELECT a.region, count(*) AS n FROM o a JOIN o b ON a.region = b.region GROUP BY a.region",
     "Exchange hash(region) across the partitions of 'o'"),
    ("SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY region ORDER BY ts) AS rn FROM o) WHERE rn = 1",
     "Exchange hash(__rank_p0) across the partitions of 'o'"),
])
def test_state_keyed_otherwise_gets_an_exchange_that_explain_shows(tmp_path, query, exchange):
    session = _session(tmp_path)
    session.execute(f"CREATE SINK out AS {query} WITH (connector = 'stdout');")
    inputs = 2 if " JOIN " in query else 1  # a join of the stream with itself: one exchange per side
    assert len(exchanges_of(session.sinks["out"].plan)) == inputs
    plan = session.execute(f"EXPLAIN CREATE SINK out2 AS {query} WITH (connector = 'stdout');")[0].text
    assert plan.count("Exchange") == inputs and exchange in plan
    assert "Exchange" not in session.execute(f"EXPLAIN {query}")[0].text  # one process reads every partition


ONE_SHUFFLE = ("a query over a partitioned source gets one shuffle (an exchange) at most: key the later state by the "
               "same columns, or split the query into two pipelines")


@pytest.mark.parametrize("query, what, hint", [
    ("SELECT n, count(*) AS c FROM (SELECT region, count(*) AS n FROM o GROUP BY region) t GROUP BY n",
     "it needs a second shuffle (ChangelogAggregate (updating input -> updating) is keyed by other columns than the "
     "exchange below it)",
     ONE_SHUFFLE),
    ("SELECT n, count(*) AS c FROM (SELECT customer_id, count(*) AS n FROM o GROUP BY customer_id) t GROUP BY n",
     "the GROUP BY key does not include the partition key 'customer_id'",
     "a shuffle takes rows as they are read (it drops what a replay publishes again by their source message ids), "
     "not results of an aggregate, a join or a ranking: key this state by the partition key"),
    ("SELECT a.amount FROM o a JOIN o b ON a.amount > b.amount AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND",
     "IntervalJoin INNER has no equality condition to shuffle both inputs by",
     "join the streams on an equality of columns (a = b), or on the partition key"),
])
def test_queries_no_single_exchange_makes_right_are_refused(tmp_path, query, what, hint):
    with pytest.raises(UnsupportedSqlError) as caught:
        _session(tmp_path).execute(f"\nCREATE SINK out AS {query} WITH (connector = 'stdout');")
    assert caught.value.message == f"cannot run partition by partition over partitioned source 'o': {what}"
    assert caught.value.hint == hint
    assert (caught.value.location.line, caught.value.location.col) == (2, 1)


def test_check_reports_a_shuffle_at_file_line_col_and_exits_2(tmp_path):
    (tmp_path / "regions.csv").write_text("region,name\n")
    path = tmp_path / "pipeline.sql"
    path.write_text(SOURCE + "\nCREATE SINK by_region AS SELECT a.region FROM o a JOIN o b ON a.amount > b.amount\n"
                    "  AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '1' SECOND WITH (connector = 'stdout');\n")
    result = subprocess.run([sys.executable, "-m", "sqlstream.cli.main", "check", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}:7:1: error: cannot run partition by partition over partitioned "
                                    "source 'o': IntervalJoin INNER has no equality condition")
    assert "hint: join the streams on an equality of columns (a = b), or on the partition key" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_workers_says_how_to_run_a_partitioned_pipeline(tmp_path):
    (tmp_path / "regions.csv").write_text("region,name\n")
    path = tmp_path / "pipeline.sql"
    path.write_text(SOURCE + "SELECT * FROM o;\n")
    result = subprocess.run([sys.executable, "-m", "sqlstream.cli.main", "run", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert f"error: {path}: a partitioned source (partitions = P) runs as a group of workers" in result.stderr
    assert "hint: sqlstream run FILE --workers N --checkpoint DIR" in result.stderr
    workers = subprocess.run([sys.executable, "-m", "sqlstream.cli.main", "run", str(path), "--workers", "2"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert workers.returncode == 2
    assert "error: a group of workers needs checkpoints" in workers.stderr


def test_a_fenced_run_writes_no_checkpoint_and_commits_no_output(tmp_path):
    """A worker that can no longer vouch for its partition's lease refuses the checkpoint
    before anything of the epoch counts: no offsets, no committed part file."""
    session = Session(base_dir=str(tmp_path), dead_letter_path="off")
    session.execute("""
        SET checkpoint_dir = 'ck';
        CREATE SOURCE nums (n BIGINT) WITH (connector = 'generator', rows_per_second = 0, max_rows = 1000,
                                            fields.n.kind = 'sequence');
        CREATE SINK out AS SELECT n FROM nums WITH (connector = 'file', path = 'out', format = 'json');
    """)
    asked = []

    def fence():
        asked.append(1)
        return "worker w1 lost the lease of partition 3"

    with pytest.raises(ExecutionError) as caught:  # the last checkpoint, when the input ended
        session.run(checkpoint_fence=fence)
    fenced = caught.value.__cause__
    assert isinstance(fenced, FencedCheckpointError)
    assert fenced.message == "checkpoint of epoch 1 not written: worker w1 lost the lease of partition 3"
    assert fenced.exit_code == 1
    assert asked
    assert not list((tmp_path / "ck" / "offsets").glob("*.json"))
    assert not list((tmp_path / "out").glob("part-*"))
