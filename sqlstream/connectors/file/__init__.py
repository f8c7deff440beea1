"""``connector = 'file'``: JSON lines, CSV and Parquet files as a bounded source or a sink.

Source: ``path`` is a file, a directory or a glob; files are read once, in sorted name
order, in blocks of about ``file_batch_size`` rows (Parquet: record batches of that
many rows). A line is never split: an unterminated last line is held back until more
bytes arrive or the file has stopped growing (:data:`SETTLE_S`).

Sink: output is written under a hidden temporary name ``.<name>.<pid>.inprogress``
and renamed into place when complete, so no reader ever sees a half-written file and
a crash never destroys the previous output: ``mode = 'overwrite'`` replaces the old
file (or old Parquet parts) only when the run ends cleanly; ``mode = 'append'``
appends JSON/CSV at batch boundaries; rolled Parquet (``rows_per_file`` /
``roll_interval``) renames each part into place as it completes. Temporary files
left by dead processes are removed when a sink opens.

Checkpoints: the source reports and resumes from exact positions
(:mod:`~sqlstream.connectors.file.positions`); the sink commits each epoch exactly
once (:mod:`~sqlstream.connectors.file.epoch_writers`, with a hidden manifest,
:mod:`~sqlstream.connectors.file.manifest`). See ``docs/checkpoints-file-connectors.md``.
"""

from sqlstream.connectors.durable_files import remove_stale_temp_files
from sqlstream.connectors.file.sink import FileSink
from sqlstream.connectors.file.source import FileSource, resolve_files
from sqlstream.connectors.file.text_reader import SETTLE_S

__all__ = ["FileSource", "FileSink", "resolve_files", "remove_stale_temp_files", "SETTLE_S"]
