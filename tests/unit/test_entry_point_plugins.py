"""Entry-point plugins in-process: when they load, what they register, and the error
for each way a plugin can be wrong (the subprocess tests are in
tests/integration/test_plugins.py)."""

from __future__ import annotations

import importlib.metadata
import textwrap

import pytest

from sqlstream.connectors import SINK_CONNECTORS, SOURCE_CONNECTORS
from sqlstream.connectors.plugins import ConnectorPlugins
from sqlstream.errors import ConnectorError, UdfError
from sqlstream.functions import FunctionCatalog
from sqlstream.introspection import connector_rows
from sqlstream.udf.plugins import FunctionPacks


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Install fake distributions under tmp_path; returns ``add(dist, version, group,
    entries, modules)`` and the scan (which counts its calls)."""
    for registry in (SOURCE_CONNECTORS, SINK_CONNECTORS):
        for attribute in ("_classes", "_origins", "_lazy"):
            monkeypatch.setattr(registry, attribute, dict(getattr(registry, attribute)))
    monkeypatch.syspath_prepend(str(tmp_path))
    scans = []

    def scan(group):
        scans.append(group)
        return [ep for d in importlib.metadata.distributions(path=[str(tmp_path)]) for ep in d.entry_points
                if ep.group == group]

    def add(dist, version, group, entries, modules):
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))
        for name, source in modules.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))

    loader = ConnectorPlugins(scan=scan)
    for registry in (SOURCE_CONNECTORS, SINK_CONNECTORS):
        monkeypatch.setattr(registry, "_plugins", loader.load)
    return add, scans, scan


SOURCE_CLASS = """
    from sqlstream.connectors import SourceConnector
    class DripSource(SourceConnector):
        '''Drips rows.'''
        name = "{name}"
        def open(self, ctx):
            raise NotImplementedError
"""


def test_built_ins_are_found_without_scanning_and_a_miss_scans_once(plugins):
    add, scans, _ = plugins
    add("drip", "1.2", "sqlstream.connectors", {"drip": "plug_drip:DripSource"}, {"plug_drip": SOURCE_CLASS.format(name="drip")})
    assert SOURCE_CONNECTORS["file"].__name__ == "FileSource"
    assert scans == []
    assert SOURCE_CONNECTORS["DRIP"].__name__ == "DripSource"
    assert "nothing" not in SOURCE_CONNECTORS
    assert scans == ["sqlstream.connectors"]
    assert SOURCE_CONNECTORS.origin("drip") == "drip==1.2"
    row = next(r for r in connector_rows() if r["name"] == "drip")
    assert row == {"name": "drip", "kind": "source", "origin": "drip==1.2", "description": "Drips rows."}


def test_a_module_entry_point_registers_a_source_and_a_sink(plugins):
    add, _, _ = plugins
    add("both", "3.0", "sqlstream.connectors", {"both": "plug_both"}, {"plug_both": """
        from sqlstream.connectors import SinkConnector, SourceConnector, register_sink, register_source
        @register_source
        class BothSource(SourceConnector):
            name = "both"
            def open(self, ctx): ...
        @register_sink
        class BothSink(SinkConnector):
            name = "both"
            def open(self, schema, ctx): ...
    """})
    assert SINK_CONNECTORS["both"].__name__ == "BothSink"
    assert SOURCE_CONNECTORS["both"].__name__ == "BothSource"
    assert SOURCE_CONNECTORS.origin("both") == SINK_CONNECTORS.origin("both") == "both==3.0"


@pytest.mark.parametrize(("value", "module", "message"), [
    ("plug_named:DripSource", SOURCE_CLASS.format(name="other"),
     "names class DripSource, whose name is 'other'"),
    ("plug_thing:THING", "THING = 42\n", "names 42, which is neither a SourceConnector nor a SinkConnector class"),
    ("plug_empty", "\n", "registers no connector named 'bad'"),
    ("plug_missing:Nope", "\n", "failed to load: AttributeError: "),
])
def test_a_wrong_plugin_is_a_clear_error(plugins, value, module, message):
    add, _, _ = plugins
    add("badpkg", "0.3", "sqlstream.connectors", {"bad": value}, {value.split(":")[0]: module})
    with pytest.raises(ConnectorError) as info:
        SOURCE_CONNECTORS.lookup("bad")
    assert f"plugin entry point 'bad = {value}' (sqlstream.connectors, from badpkg==0.3)" in info.value.message
    assert message in info.value.message
    with pytest.raises(ConnectorError):  # asked again, it fails again
        SOURCE_CONNECTORS.lookup("bad")


def test_two_distributions_may_not_declare_one_connector(plugins):
    add, _, _ = plugins
    add("one", "1", "sqlstream.connectors", {"drip": "plug_one:DripSource"}, {"plug_one": SOURCE_CLASS.format(name="drip")})
    add("two", "2", "sqlstream.connectors", {"drip": "plug_two:DripSource"}, {"plug_two": SOURCE_CLASS.format(name="drip")})
    with pytest.raises(ConnectorError, match="two plugins declare connector 'drip': .*from one==1.*from two==2"):
        SOURCE_CONNECTORS.lookup("drip")


PACK = """
    import pyarrow as pa
    from sqlstream import udf
    @udf(args=[pa.int64()], returns=pa.int64())
    def twice(x):
        return x
    NOT_A_UDF = 1
"""


def test_function_packs_load_on_first_use_with_their_origin(plugins):
    add, scans, scan = plugins
    add("mathpack", "0.9", "sqlstream.functions", {"math": "plug_math"}, {"plug_math": PACK})
    catalog = FunctionCatalog(FunctionPacks(scan=scan))
    assert scans == []
    assert catalog["twice"].origin == "mathpack==0.9"
    assert list(catalog) == ["twice"]
    assert scans == ["sqlstream.functions"]


def test_a_function_pack_without_functions_is_an_error(plugins):
    add, _, scan = plugins
    add("emptypack", "1", "sqlstream.functions", {"e": "plug_e:NOT_A_UDF"}, {"plug_e": PACK})
    with pytest.raises(UdfError, match=r"plugin entry point 'e = plug_e:NOT_A_UDF' \(sqlstream.functions, "
                                       r"from emptypack==1\) has no @udf functions"):
        "twice" in FunctionCatalog(FunctionPacks(scan=scan))  # noqa: B015


def _connector_completions(text: str) -> list[str]:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from sqlstream import Session
    from sqlstream.cli.completion import SqlCompleter

    completer = SqlCompleter(Session())
    document = Document(text, cursor_position=len(text))
    return [c.text for c in completer.get_completions(document, CompleteEvent(completion_requested=True))]


def test_completion_lists_plugin_connectors_and_survives_a_broken_one(plugins):
    add, _, _ = plugins
    add("drip", "1.2", "sqlstream.connectors", {"drip": "plug_drip2:DripSource"}, {"plug_drip2": SOURCE_CLASS.format(name="drip")})
    assert _connector_completions("CREATE SOURCE s (a BIGINT) WITH (connector = 'dr") == ["drip'"]
    add("badpkg", "0.3", "sqlstream.connectors", {"bad": "plug_raises"}, {"plug_raises": "raise ImportError('nope')\n"})
    SOURCE_CONNECTORS._plugins.__self__.reset()  # the loader scans again
    assert _connector_completions("CREATE SOURCE s (a BIGINT) WITH (connector = 'dr") == []
