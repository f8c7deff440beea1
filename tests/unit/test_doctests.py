"""Docs that run: every ``>>>`` example in a ``sqlstream`` module docstring passes.

The examples are collected with the standard library's :mod:`doctest` (one case per
module that has any) rather than by ``pytest --doctest-modules`` on the package, so
pytest never collects ``sqlstream`` itself (its ``TestSession``/``TestSource``
classes would look like test classes to it).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sqlstream
from sqlstream.connectors import SINK_CONNECTORS, SOURCE_CONNECTORS


def _modules_with_examples() -> list[str]:
    names = []
    finder = doctest.DocTestFinder()
    for info in pkgutil.walk_packages(sqlstream.__path__, "sqlstream."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing it would run it
        module = importlib.import_module(info.name)
        if any(test.examples for test in finder.find(module)):
            names.append(info.name)
    return names


MODULES_WITH_EXAMPLES = _modules_with_examples()


def test_the_package_has_docstring_examples():
    assert "sqlstream.session" in MODULES_WITH_EXAMPLES
    assert "sqlstream.testing" in MODULES_WITH_EXAMPLES


@pytest.fixture
def registries_restored(monkeypatch):
    """Connectors an example registers (the plugin API's ``countdown``) stay in the example."""
    for registry in (SOURCE_CONNECTORS, SINK_CONNECTORS):
        for attribute in ("_classes", "_origins", "_lazy"):
            monkeypatch.setattr(registry, attribute, dict(getattr(registry, attribute)))


@pytest.mark.parametrize("module_name", MODULES_WITH_EXAMPLES)
def test_docstring_examples_run(module_name, registries_restored):
    module = importlib.import_module(module_name)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report: list[str] = []
    for test in doctest.DocTestFinder().find(module):
        if test.examples:
            runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0
    assert results.failed == 0, "".join(report)
