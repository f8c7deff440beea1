"""While the run loop runs, what existed when it started (libraries, plans, operators)
is left out of the garbage collector's full passes (``gc.freeze``: one pass over it
took 65-400 ms mid-stream); afterwards it is collected as before."""

from __future__ import annotations

import gc

import pyarrow as pa

from sqlstream import udf
from sqlstream.testing import TestSession

FROZEN_DURING_RUN: list[int] = []


@udf(args=[pa.int64()], returns=pa.int64())
def frozen_now(v: pa.Array) -> pa.Array:
    FROZEN_DURING_RUN.append(gc.get_freeze_count())
    return v


def test_the_run_loop_freezes_what_exists_and_unfreezes_it_after():
    FROZEN_DURING_RUN.clear()
    session = TestSession()
    session.register_udf(frozen_now)
    session.execute("CREATE SOURCE s (v BIGINT) WITH (connector = 'memory')")
    session.stream("s").push([{"v": 1}, {"v": 2}]).finish()
    assert session.run_query("SELECT frozen_now(v) AS v FROM s") == [{"v": 1}, {"v": 2}]
    assert FROZEN_DURING_RUN and all(count > 0 for count in FROZEN_DURING_RUN)
    assert gc.get_freeze_count() == 0
