"""The connector registry: case-insensitive names, one class per name, built-ins
imported only when named, and the errors a user sees for an unknown connector."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from sqlstream.connectors import (
    SINK_CONNECTORS,
    SOURCE_CONNECTORS,
    RunContext,
    SinkWriter,
    SourceConnector,
    SourceReader,
    register_source,
    sink_connector,
    source_connector,
)
from sqlstream.connectors import registry as registry_module
from sqlstream.connectors.options import RawOption
from sqlstream.connectors.registry import ConnectorRegistry
from sqlstream.errors import ConnectorError, Location


class _KafkaSource(SourceConnector):
    name = "Kafka"

    def open(self, ctx: RunContext) -> SourceReader:
        raise NotImplementedError


class _OtherFileSource(SourceConnector):
    name = "file"

    def open(self, ctx: RunContext) -> SourceReader:
        raise NotImplementedError


def _python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ), timeout=120
    )
    return result.stdout.strip()


def test_a_connector_registered_as_Kafka_is_found_in_any_case():
    registry = ConnectorRegistry("source", {})
    registry.register(_KafkaSource)
    assert registry.lookup("kafka") is _KafkaSource
    assert registry.lookup("KAFKA") is _KafkaSource
    assert registry.lookup("Kafka") is _KafkaSource
    assert "kAfKa" in registry
    assert list(registry) == ["kafka"]


def test_register_source_and_source_connector_use_one_spelling(monkeypatch):
    monkeypatch.setattr(registry_module, "SOURCE_CONNECTORS", ConnectorRegistry("source", {}))
    register_source(_KafkaSource)
    assert source_connector("kafka") is _KafkaSource
    assert source_connector("KAFKA", Location("p.sql", 1, 1)) is _KafkaSource


def test_a_second_file_source_is_refused():
    with pytest.raises(ConnectorError) as info:
        SOURCE_CONNECTORS.register(_OtherFileSource)
    assert info.value.message == (
        "source connector 'file' is already registered (sqlstream.connectors.file.source.FileSource)"
    )
    assert info.value.hint == f"choose another name for {__name__}._OtherFileSource"
    assert source_connector("file").__name__ == "FileSource"  # the built-in stays


def test_a_built_in_name_is_refused_before_the_built_in_was_imported():
    code = (
        "import sys\n"
        "from sqlstream.connectors import SinkConnector, register_sink\n"
        "from sqlstream.errors import ConnectorError\n"
        "print('sqlstream.connectors.stdout' in sys.modules)\n"
        "class Shadow(SinkConnector):\n"
        "    name = 'STDOUT'\n"
        "    def open(self, schema, ctx): ...\n"
        "try:\n"
        "    register_sink(Shadow)\n"
        "except ConnectorError as error:\n"
        "    print(error.message)\n"
    )
    assert _python(code).splitlines() == [
        "False",
        "sink connector 'stdout' is already registered (sqlstream.connectors.stdout.StdoutSink)",
    ]


def test_registering_the_same_class_again_is_a_no_op():
    registry = ConnectorRegistry("source", {})
    assert registry.register(_KafkaSource) is _KafkaSource
    assert registry.register(_KafkaSource) is _KafkaSource
    assert registry.lookup("kafka") is _KafkaSource


def test_a_connector_needs_a_name():
    class Nameless(SourceConnector):
        def open(self, ctx: RunContext) -> SourceReader:
            raise NotImplementedError

    with pytest.raises(ConnectorError) as info:
        ConnectorRegistry("source", {}).register(Nameless)
    assert info.value.message == f"source connector {Nameless.__module__}.{Nameless.__qualname__} has no name"


def test_importing_sqlstream_does_not_import_nats():
    assert _python("import sqlstream, sys; print('nats' in sys.modules)") == "False"


def test_built_in_connectors_are_imported_when_named():
    code = (
        "import sys\n"
        "from sqlstream.connectors import SOURCE_CONNECTORS, source_connector\n"
        "print('nats' in sys.modules, source_connector('file').__name__, 'nats' in sys.modules)\n"
        "print(','.join(sorted(SOURCE_CONNECTORS)), 'nats' in sys.modules)\n"
    )
    assert _python(code).splitlines() == ["False FileSource False", "file,generator,http,memory,mqtt,nats,postgres True"]


def test_unknown_connector_names_what_is_available():
    where = Location("p.sql", 1, 34)
    with pytest.raises(ConnectorError) as info:
        source_connector("generatr", where)
    assert info.value.message == "unknown source connector 'generatr'"
    assert info.value.location == where
    assert info.value.hint.startswith("did you mean 'generator'? available: file, generator, ")
    assert "nats" in info.value.hint.split("available: ")[1].split(", ")
    with pytest.raises(ConnectorError) as info:
        sink_connector(None)
    assert info.value.message == "a sink needs a connector"
    assert info.value.hint.startswith("add WITH (connector = '...'); available: file, ")


def test_the_registries_list_the_built_ins():
    assert {"file", "generator", "nats"} <= set(SOURCE_CONNECTORS)
    assert {"file", "nats", "stdout"} <= set(SINK_CONNECTORS)
    assert SOURCE_CONNECTORS["NATS"].__name__ == "NatsSource"


# -- metadata columns ---------------------------------------------------------------------------


def test_a_metadata_column_another_connector_fills_is_refused():
    schema = pa.schema([pa.field("a", pa.int64()), pa.field("_subject", pa.string())])
    raw = {"connector": RawOption("generator")}
    with pytest.raises(ConnectorError) as info:
        source_connector("generator").create("s", schema, raw, None)
    assert info.value.message == "column '_subject' is a metadata column, which connector 'generator' does not fill"
    assert info.value.hint == "metadata columns are filled by the nats connector; rename the column"


def test_a_column_starting_with_an_underscore_that_no_connector_fills_is_allowed():
    schema = pa.schema([pa.field("a", pa.int64()), pa.field("_note", pa.string())])
    connector = source_connector("generator").create("s", schema, {"connector": RawOption("generator")}, None)
    assert connector.schema.names == ["a", "_note"]


def test_metadata_column_names_start_with_an_underscore(monkeypatch):
    monkeypatch.setattr(registry_module, "SOURCE_CONNECTORS", ConnectorRegistry("source", {}))

    class Tagged(SourceConnector):
        name = "tagged"
        metadata_columns = {"topic": pa.string()}

        def open(self, ctx: RunContext) -> SourceReader:
            raise NotImplementedError

    with pytest.raises(ConnectorError) as info:
        register_source(Tagged)
    assert info.value.message == "source connector 'tagged' declares metadata column 'topic'"
    assert info.value.hint == "metadata column names start with '_'"


# -- the interface ------------------------------------------------------------------------------


def test_a_connector_must_implement_open_and_a_reader_poll():
    class Incomplete(SourceConnector):
        name = "incomplete"

    class Silent(SourceReader):
        pass

    class Mute(SinkWriter):
        pass

    for cls, args in ((Incomplete, ("s", pa.schema([]), {})), (Silent, ()), (Mute, ())):
        with pytest.raises(TypeError, match="abstract"):
            cls(*args)


def test_the_plugin_api_is_exported():
    import sqlstream.connectors

    assert sorted(sqlstream.connectors.__all__) == [
        "AsyncioBridge",
        "DeadLetter",
        "Handoff",
        "OptionSpec",
        "RunContext",
        "SINK_CONNECTORS",
        "SOURCE_CONNECTORS",
        "SinkConnector",
        "SinkWriter",
        "SourceBatch",
        "SourceConnector",
        "SourceReader",
        "register_sink",
        "register_source",
        "sink_connector",
        "source_connector",
    ]
