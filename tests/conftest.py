"""Shared fixtures."""

from __future__ import annotations

import pytest

from sqlstream.testing import TestSession


@pytest.fixture
def session(tmp_path):
    """A TestSession (manual clock, memory sources/sinks) rooted in a temporary directory."""
    return TestSession(base_dir=str(tmp_path))
