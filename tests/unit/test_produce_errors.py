"""``sqlstream produce`` builds a pipeline from its flags; a mistake in a flag is
reported at that flag, never at the generated SQL (which the user never wrote). All of
these fail at CREATE, before any connection to NATS."""

from __future__ import annotations

import pytest

from sqlstream.cli.main import main

URL = "nats://127.0.0.1:1"  # never reached: every case fails before connecting


def produce_error(capsys, *flags: str) -> str:
    assert main(["produce", *flags]) == 2
    err = capsys.readouterr().err
    assert "CREATE" not in err and "<produce>" not in err and "sink 'published'" not in err, err
    return err


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["x", "--columns", "a BIGINT", "-o", "fields.a.mn=3"],
         "sqlstream produce -o: error: unknown option 'fields.a.mn' for connector 'generator'\n"
         "  fields.a.mn=3\n  ^^^^^^^^^^^^^\n  hint: did you mean 'fields.a.min'?"),
        (["x", "--columns", "a BIGINT", "--rate", "-3"],
         "sqlstream produce --rate: error: option 'rows_per_second' = '-3' is invalid for connector 'generator': "
         "must be >= 0\n  -3\n  ^^\n"),
        (["x", "--columns", "a BIGINT, ts TIMESTAMPX"],
         "sqlstream produce --columns: error: type TIMESTAMPX is not supported\n"
         "  a BIGINT, ts TIMESTAMPX\n               ^^^^^^^^^^\n"),
        (["x", "--columns", "a BIGINT, a INT"],
         "sqlstream produce --columns: error: column 'a' is declared twice\n  a BIGINT, a INT\n            ^\n"),
        (["x", "--columns", "a BIGINT", "--url", "foo://bar"],
         "sqlstream produce --url: error: option 'url' = 'foo://bar' is invalid for connector 'nats'"),
        (["x.{b}", "--columns", "a BIGINT"],
         "sqlstream produce SUBJECT: error: subject 'x.{b}' names column 'b', which the query does not produce\n"
         "  x.{b}\n  ^^^^^\n  hint: columns: a"),
        (["x.*", "--columns", "a BIGINT"],
         "sqlstream produce SUBJECT: error: option 'subject' = 'x.*' is invalid for connector 'nats': "
         "a published subject cannot contain wildcards"),
    ],
    ids=["unknown-option", "rate", "column-type", "duplicate-column", "url", "subject-column", "subject-wildcard"],
)
def test_a_bad_flag_is_reported_at_the_flag(capsys, flags, expected):
    flags = flags if "--url" in flags else [*flags, "--url", URL]
    assert expected in produce_error(capsys, *flags, "--count", "1")


def test_an_option_without_a_value_names_the_form(capsys):
    assert "error: -o expects key=value, got 'seed'\n  hint: e.g. -o fields.temp.min=15" in produce_error(
        capsys, "x", "--columns", "a BIGINT", "-o", "seed", "--url", URL)
