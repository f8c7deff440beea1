"""Pipeline tests: a pipeline, fixture rows for its sources, and the rows each sink must get.

A test is a folder::

    tests/sql/<case>/
      pipeline.sql             the pipeline, as users write it
      <files it reads>         inputs named by its file sources (relative paths)
      inputs/<source>.jsonl    optional fixture replacing source <source> (.jsonl, .csv or .parquet):
                               a NATS or generator source becomes a file of rows
      expected/<sink>.jsonl    rows each sink must receive; a bare SELECT is sink query_1, query_2, ...
      test.toml                optional, see below

or a single TOML file (``tests/sql/<case>.toml``) holding the same in one place::

    sql = '''CREATE SOURCE bids (...) WITH (connector = 'nats', ...);
             CREATE SINK totals AS SELECT ... FROM bids ...;'''   # or: pipeline = "file.sql"
    clock_start = 2024-01-01T00:00:00     # the manual clock (processing time), optional
    end_of_input = true                   # false: stop after the steps without ending the sources

    [settings]                            # applied before the pipeline, like SET
    batch_size = 2

    [inputs.bids]                         # fixture: rows = [...] or file = "...", format, timestamp_format
    rows = [ { id = 1, ts = 2024-01-01T00:00:01, price = 10.0 } ]

    [[steps]]                             # optional, run in order on the manual clock
    source = "bids"                       #   more rows for a source (rows = [...] or file = "...")
    rows = [ { id = 2, ts = 2024-01-01T00:00:07, price = 3.0 } ]
    [[steps]]
    watermark = { bids = 2024-01-01T00:00:10 }   # move a source's watermark
    [[steps]]
    advance = "5s"                        #   move the manual clock (EMIT EVERY, idle_timeout)
    [[steps]]
    expect.totals = [ { ... } ]           #   rows the sink received since its previous check
    [[steps]]
    end = "bids"                          #   the source ends (end = true: every source)

    [expected.totals]                     # rows = [...] or file = "...";
    mode = "final"                        #   final: changelog folded to the final table (default)
    rows = [ { ... } ]                    #   append: every row received, with __op for updating results
    ordered = false                       #   true: rows must arrive in this order (append mode)

Every sink is captured in memory instead of its real destination; no servers are
needed. Rows compare as multisets unless ``ordered``; expected values are read with the
sink's column types (so ``2024-01-01T00:00:01`` matches a TIMESTAMP however it is
written) and floats compare to 9 significant digits. A test's sources have
``max_future = 'off'`` unless they set it: the manual clock is not today's date.
Used by ``sqlstream test`` (its report: :mod:`sqlstream.cli.pipeline_test_report`) and by
the project's own tests. :mod:`~sqlstream.pipeline_tests.cases` reads a case,
:mod:`~sqlstream.pipeline_tests.runner` runs it, :mod:`~sqlstream.pipeline_tests.compare`
checks what the sinks got.
"""

from sqlstream.errors import TestSpecError
from sqlstream.pipeline_tests.cases import CaseSpec, ExpectedSpec, InputSpec, discover_cases, load_case
from sqlstream.pipeline_tests.compare import canonical_rows
from sqlstream.pipeline_tests.runner import CaseResult, run_case

__all__ = [
    "CaseResult",
    "CaseSpec",
    "InputSpec",
    "ExpectedSpec",
    "TestSpecError",
    "load_case",
    "run_case",
    "discover_cases",
    "canonical_rows",
]
