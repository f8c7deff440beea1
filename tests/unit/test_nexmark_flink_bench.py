"""``benchmarks/nexmark_flink.py`` without Flink: every query's sqlstream pipeline plans,
every Flink job has its DDL and one ``CREATE TABLE ... AS``, and the output comparison
treats the two engines' spellings of one row as equal and a changed row as a mismatch."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.nexmark_flink import QUERIES, ensure_data, flink_statements, read_output, same_rows, sqlstream_pipeline
from sqlstream.session import Session

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    full, _tiny = ensure_data(tmp_path_factory.mktemp("nexmark"), 200)
    return full


@pytest.mark.parametrize("name", list(QUERIES))
def test_every_query_plans_in_sqlstream(name, data, tmp_path):
    results = Session().execute(sqlstream_pipeline(QUERIES[name], data, tmp_path / "out.csv"), base_dir=str(tmp_path))
    assert len(results) == 4  # three sources and the sink


@pytest.mark.parametrize("name", list(QUERIES))
def test_every_flink_job_reads_the_three_files_and_writes_one_result(name, data, tmp_path):
    statements = flink_statements(QUERIES[name], data, tmp_path / "out").split(";\n--\n")
    assert [s.split("(")[0] for s in statements[:3]] == ["CREATE TABLE person ", "CREATE TABLE auction ",
                                                        "CREATE TABLE bid "]
    assert all("WATERMARK FOR date_time AS date_time - INTERVAL '0.2' SECOND" in s for s in statements[:3])
    assert statements[3].startswith("CREATE TABLE query_result WITH ('connector' = 'filesystem'")
    assert "HOP(bid," not in statements[3] and "TUMBLE(bid," not in statements[3]  # Flink's TVF spelling


def test_the_two_spellings_of_a_row_compare_equal(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text('"auction","price","date_time","extra"\n'
                    "1000,790.868,2023-11-14 22:13:19.946000,\n1002,908,2023-11-14 22:13:20.000000,\"\"\n"
                    "1003,3852.6440000000002,2023-11-14 22:13:21.100000,x\n")
    (tmp_path / "flink").mkdir()
    (tmp_path / "flink" / "part-0-0").write_text('1002,9.08E+2,"2023-11-14 22:13:20",\n'
                                                "1000,790.8680,2023-11-14T22:13:19.946,\n"
                                                "1003,3852.644,2023-11-14 22:13:21.1,x\n")
    mine = read_output(ours, None)
    assert same_rows(mine, read_output(tmp_path / "flink", mine.column_names)) == "ok"


def test_a_changed_row_is_a_mismatch(tmp_path):
    ours = tmp_path / "ours.csv"
    ours.write_text('"auction","price"\n1000,1.5\n1001,2\n')
    theirs = tmp_path / "theirs.csv"
    theirs.write_text("1000,1.5\n1001,3\n")
    mine = read_output(ours, None)
    assert same_rows(mine, read_output(theirs, mine.column_names)) == "MISMATCH: 1 of 2 sorted rows differ"
    theirs.write_text("1000,1.5\n")
    assert same_rows(mine, read_output(theirs, mine.column_names)) == "MISMATCH: 2 vs 1 rows"
