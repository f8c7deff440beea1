"""The checkpoint directory on its own: sealed files, damage detection, pruning, and
the words for a changed pipeline."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sqlstream.operators.snapshot import OperatorSnapshot
from sqlstream.runtime.checkpointing import describe_change
from sqlstream.runtime.checkpoints import Checkpoint, CheckpointStore, DamagedCheckpoint


def _epoch(store: CheckpointStore, epoch: int, rows: int = 3, commit: bool = True) -> None:
    table = pa.table({"k": list(range(rows)), "v": [float(i) for i in range(rows)]})
    state = store.write_state(epoch, {"0-Agg": OperatorSnapshot("Agg", 1, {"watermark": 5}, {"partials": table})})
    store.write_offsets(Checkpoint(epoch, {"sinks": {}}, {"s": {"position": {"row": epoch}}}, {"out": None}, state,
                                   created_at=1.0, stats={"state_rows": rows, "state_bytes": 10}))
    if commit:
        store.write_commit(epoch, {"duration_ms": 2.5})


def test_round_trip(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.create()
    _epoch(store, 1)
    loaded = store.load(1)
    assert loaded.committed and loaded.sources == {"s": {"position": {"row": 1}}}
    (snap,) = store.snapshots(loaded).values()
    assert snap.kind == "Agg" and snap.values == {"watermark": 5}
    assert snap.tables["partials"].column("k").to_pylist() == [0, 1, 2]
    (info,) = store.list()
    assert (info.epoch, info.committed, info.state_rows, info.duration_ms) == (1, True, 3, 2.5)


def test_torn_and_altered_files_are_detected(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.create()
    _epoch(store, 1)
    _epoch(store, 2)
    offsets = tmp_path / "offsets" / "0000000002.json"
    offsets.write_bytes(offsets.read_bytes()[:-20])
    with pytest.raises(DamagedCheckpoint, match="not a complete checkpoint file"):
        store.load(2)
    (state,) = (tmp_path / "state" / "0000000001").iterdir()
    data = bytearray(state.read_bytes())
    data[-10] ^= 1
    state.write_bytes(bytes(data))
    with pytest.raises(DamagedCheckpoint, match="does not match its checksum"):
        store.load(1)


def test_an_edited_offsets_file_fails_its_checksum(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.create()
    _epoch(store, 1)
    offsets = tmp_path / "offsets" / "0000000001.json"
    offsets.write_text(offsets.read_text().replace('"row": 1', '"row": 7'))
    with pytest.raises(DamagedCheckpoint, match="checksum"):
        store.load(1)


def test_prune_keeps_the_newest_committed(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.create()
    for epoch in range(1, 6):
        _epoch(store, epoch)
    _epoch(store, 6, commit=False)
    store.prune(keep=2)
    assert store.epochs() == [4, 5, 6] and store.committed_epochs() == [4, 5]
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["0000000004", "0000000005", "0000000006"]
    store.remove_all()
    assert store.epochs() == [] and list((tmp_path / "state").iterdir()) == []


def test_describe_change_names_what_changed():
    old = {"out": {"columns": ["a int64"], "plan": ["Tumble 10s", "  Scan s"]}, "gone": {"columns": [], "plan": []}}
    new = {"out": {"columns": ["a int64"], "plan": ["Tumble 20s", "  Scan s"]}, "added": {"columns": [], "plan": []}}
    text = describe_change(old, new)
    assert "sink 'gone' is gone" in text and "sink 'added' is new" in text
    assert "plan step 'Tumble 10s' is now 'Tumble 20s'" in text
    widened = {"out": {"columns": ["a int64", "b string"], "plan": ["Tumble 10s", "  Scan s"]}}
    assert describe_change({"out": old["out"]}, widened) == "sink 'out' columns (a int64) are now (a int64, b string)"
    assert describe_change(old, old) == ""


def test_writes_cut_short_are_removed_when_the_directory_opens(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.create()
    _epoch(store, 1)
    (tmp_path / "offsets" / "0000000002.json.tmp").write_text("{")
    (tmp_path / "commits" / "0000000002.json.tmp").write_text("{")
    store.create()
    assert sorted(p.name for p in (tmp_path / "offsets").iterdir()) == ["0000000001.json"]
    assert sorted(p.name for p in (tmp_path / "commits").iterdir()) == ["0000000001.json"]
