"""Column-wise base64 (``sqlstream.connectors.base64_columns``) against Python's
``base64`` module, value by value: random bytes, both alphabets, slices, NULLs, and
texts that are not base64."""

from __future__ import annotations

import base64
import re

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlstream.connectors.base64_columns import base64_problem, from_base64, to_base64

_VALID = re.compile(r"(?:[A-Za-z0-9+/\-_]{4})*(?:[A-Za-z0-9+/\-_]{2}==|[A-Za-z0-9+/\-_]{3}=)?")


def reference(text: str) -> bytes | None:
    """What a value decodes to by the documented rules, or None if it is not base64."""
    if not _VALID.fullmatch(text):
        return None
    return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), max_size=50), st.integers(0, 10), st.integers(0, 50))
def test_encode_and_decode_agree_with_python(values, start, length):
    array = pa.array(values, pa.binary()).slice(start, length)
    part = values[start:start + length]
    text = to_base64(array)
    assert text.to_pylist() == [None if v is None else base64.b64encode(v).decode() for v in part]
    decoded, bad = from_base64(text)
    assert decoded.to_pylist() == part and len(bad) == 0
    urlsafe = pa.array([None if v is None else base64.urlsafe_b64encode(v).decode() for v in part], pa.large_string())
    decoded, bad = from_base64(urlsafe)
    assert decoded.to_pylist() == part and len(bad) == 0


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet="QUJDaGk+/-_=* \u00e9\n", max_size=12)), max_size=30))
def test_any_text_decodes_like_the_reference_or_is_reported(texts):
    decoded, bad = from_base64(pa.array(texts, pa.string()))
    expected = [None if t is None else reference(t) for t in texts]
    assert sorted(bad.tolist()) == [i for i, t in enumerate(texts) if t is not None and expected[i] is None]
    assert decoded.to_pylist() == expected
    for i in bad.tolist():
        assert base64_problem(texts[i])  # every reported value has a reason


def test_the_reasons_name_what_is_wrong():
    assert base64_problem("aGk") == "a length of 3 bytes is not a multiple of 4 (padding with = is required)"
    assert base64_problem("aG\nk") == "'\\n' at character 3 is not in the base64 alphabet"
    assert base64_problem("aG=k") == "'=' (padding) is only allowed in the last two places"


def test_fixed_size_binary_and_large_binary_are_written_too():
    fixed = pa.array([b"abc", None, b"\x00\x01\x02"], pa.binary(3))
    assert to_base64(fixed).to_pylist() == ["YWJj", None, "AAEC"]
    assert to_base64(pa.array([b"x"], pa.large_binary())).to_pylist() == ["eA=="]


def test_an_empty_column():
    decoded, bad = from_base64(pa.array([], pa.string()))
    assert len(decoded) == 0 and len(bad) == 0
    assert to_base64(pa.array([], pa.binary())).to_pylist() == []
