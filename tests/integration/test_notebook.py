"""``examples/notebook/sqlstream_tour.ipynb`` executed headless (nbclient + ipykernel):
``%load_ext sqlstream``, DDL cells, bounded queries as final tables, ``-o`` stores a
DataFrame, a query without FROM, ``source_from``, and an unbounded query as a live
display that stops after ``--seconds`` with rows/s and the watermark in its footer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("pandas")

TOUR = Path(__file__).resolve().parents[2] / "examples" / "notebook" / "sqlstream_tour.ipynb"


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        for kind in ("text/html", "text/plain"):
            if kind in output.get("data", {}):
                parts.append(output["data"][kind])
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    notebook = nbformat.read(TOUR, as_version=4)
    work = tmp_path_factory.mktemp("notebook")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TOUR.parents[2]), before]))  # this checkout's sqlstream
    try:
        client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                         resources={"metadata": {"path": str(work)}})
        client.execute()
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_tour_runs_without_errors(executed):
    errors = [o for cell in executed for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []


def test_ddl_cells_say_what_they_did(executed):
    assert "CREATE SOURCE sensors" in _text(executed[1])


def test_a_bounded_query_shows_its_final_table_and_o_stores_it(executed):
    table = _text(executed[2])
    for site in ("berlin", "lisbon", "oslo"):
        assert site in table
    assert _text(executed[3]).strip() == "DataFrame 3 ['berlin', 'lisbon', 'oslo']"


def test_a_query_without_from_and_source_from(executed):
    assert "42" in _text(executed[4])
    orders = _text(executed[6])
    assert "apple" in orders and ">5<" in orders.replace(" ", "")  # sum(qty) for apple


def test_an_unbounded_query_is_a_live_display_that_stops(executed):
    live = _text(executed[8])
    assert "rows/s" in live and "watermark" in live and "stopped after 2 s" in live
    assert _text(executed[9]).strip() == "[0, 1, 2] True"
    assert "{'id': [0, 1, 2]}" in _text(executed[10])
