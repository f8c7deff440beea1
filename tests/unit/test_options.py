"""Connector options are typed and validated at CREATE time; settings likewise."""

from __future__ import annotations

import pytest

from sqlstream.connectors import SINK_CONNECTORS, SOURCE_CONNECTORS
from sqlstream.connectors.options import COMMON_SOURCE_OPTIONS, OptionSpec, RawOption, validate_options
from sqlstream.errors import ConnectorError, Location, SqlAnalysisError
from sqlstream.settings import DEFAULT_SETTINGS, parse_setting

SPECS = (
    OptionSpec("connector", required=True),
    OptionSpec("count", "int", default=3, check=lambda v: None if v > 0 else "must be > 0"),
    OptionSpec("ratio", "float", default=0.5),
    OptionSpec("enabled", "bool", default=False),
    OptionSpec("wait", "duration"),
    OptionSpec("mode", "choice", default="a", choices=("a", "b")),
    OptionSpec("fields.*.kind", "str"),
)


def validate(**raw):
    return validate_options("demo", SPECS, {k.replace("__", "."): RawOption(v) for k, v in raw.items()})


def test_values_are_converted_and_defaults_filled_in():
    assert validate(connector="demo") == {
        "connector": "demo", "count": 3, "ratio": 0.5, "enabled": False, "wait": None, "mode": "a",
    }
    options = validate(connector="demo", count="1_000", ratio=2, enabled="yes", wait="250ms", mode="B", fields__x__kind="seq")
    assert options == {
        "connector": "demo", "count": 1000, "ratio": 2.0, "enabled": True, "wait": 250_000, "mode": "b",
        "fields.x.kind": "seq",
    }


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"count": "many"}, "option 'count' = 'many' is invalid for connector 'demo': expected an integer"),
        ({"count": 1.5}, "option 'count' = 1.5 is invalid for connector 'demo': expected an integer"),
        ({"count": True}, "option 'count' = True is invalid for connector 'demo': expected an integer"),
        ({"count": 0}, "option 'count' = 0 is invalid for connector 'demo': must be > 0"),
        ({"ratio": "half"}, "option 'ratio' = 'half' is invalid for connector 'demo': expected a number"),
        ({"enabled": "maybe"}, "option 'enabled' = 'maybe' is invalid for connector 'demo': expected true or false"),
        ({"wait": "soon"}, "option 'wait' = 'soon' is invalid for connector 'demo': 'soon' is not a duration"),
        ({"wait": "5 fortnights"}, "unknown time unit 'fortnights'"),
        ({"mode": "c"}, "option 'mode' = 'c' is invalid for connector 'demo': expected one of 'a', 'b'"),
    ],
)
def test_bad_values_name_the_option(raw, message):
    with pytest.raises(ConnectorError) as info:
        validate(connector="demo", **raw)
    assert message in info.value.message


def test_unknown_option_lists_the_valid_ones_with_a_suggestion():
    where = Location("p.sql", 3, 7)
    with pytest.raises(ConnectorError) as info:
        validate_options("demo", SPECS, {"connector": RawOption("demo"), "cuont": RawOption(1, where)})
    assert info.value.message == "unknown option 'cuont' for connector 'demo'"
    assert info.value.location == where
    assert info.value.hint == (
        "did you mean 'count'? valid options: connector, count, ratio, enabled, wait, mode, fields.*.kind"
    )


def test_missing_required_option():
    where = Location("p.sql", 1, 1)
    with pytest.raises(ConnectorError) as info:
        validate_options("demo", SPECS, {}, where=where)
    assert info.value.message == "connector 'demo' needs option 'connector'"
    assert info.value.location == where


@pytest.mark.parametrize("name", sorted(set(SOURCE_CONNECTORS) - {"internal"}))
def test_every_source_accepts_the_common_options(name):
    names = {spec.name for spec in SOURCE_CONNECTORS[name].all_options()}
    assert {spec.name for spec in COMMON_SOURCE_OPTIONS} <= names
    assert {"on_error", "idle_timeout", "max_future", "timestamp_format"} <= names


def test_built_in_connectors_are_registered():
    assert {"file", "generator"} <= set(SOURCE_CONNECTORS)
    assert {"file", "stdout"} <= set(SINK_CONNECTORS)


def test_common_source_options_through_sql(session):
    session.execute(
        """CREATE SOURCE s (ts TIMESTAMP) WITH (connector = 'generator', on_error = 'skip', idle_timeout = '5s',
                                               max_future = 'off', timestamp_format = 'epoch_ms')"""
    )
    config = session.sources["s"].connector.config
    assert (config["on_error"], config["idle_timeout"], config["max_future"], config["timestamp_format"]) == (
        "skip", 5_000_000, "off", "epoch_ms",
    )


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, parsed",
    [
        ("batch_size", "1_000", 1000),
        ("batch_size", 5, 5),
        ("file_batch_size", "65536", 65536),
        ("batch_timeout", "250ms", 250_000),
        ("batch_timeout", 20, 20_000),  # a bare number is milliseconds
        ("join_state_ttl", "1h", 3_600_000_000),
        ("dedup_state_ttl", "30m", 1_800_000_000),
        ("top_n_state_ttl", "2h", 7_200_000_000),
        ("on_error", "FAIL", "fail"),
        ("dead_letter_path", "x/dl.jsonl", "x/dl.jsonl"),
        ("BATCH_SIZE", "7", 7),
    ],
)
def test_settings_parse(key, value, parsed):
    assert parse_setting(key, value) == parsed


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("batch_sise", 5, "unknown setting 'batch_sise'"),
        ("batch_size", 0, "invalid value 0 for setting 'batch_size': must be a positive number of rows"),
        ("batch_size", "lots", "invalid value 'lots' for setting 'batch_size': expected a whole number of rows"),
        ("batch_timeout", "-5ms", "invalid value '-5ms' for setting 'batch_timeout': must not be negative"),
        ("on_error", "ignore", "invalid value 'ignore' for setting 'on_error': expected dead_letter, fail or skip"),
    ],
)
def test_bad_settings(key, value, message):
    with pytest.raises(SqlAnalysisError) as info:
        parse_setting(key, value)
    assert info.value.message == message


def test_unknown_setting_lists_the_valid_keys():
    with pytest.raises(SqlAnalysisError) as info:
        parse_setting("batch_sise", 1)
    assert info.value.hint == "did you mean 'batch_size'? valid settings: " + ", ".join(DEFAULT_SETTINGS)
