"""The default suite's own rules (issue 19 part 6): a global per-test timeout, so that a hang fails
one test instead of stalling the suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_has_a_timeout():
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        import tomli as tomllib
    path = ROOT / "pyproject.toml"
    if not path.is_file():
        pytest.skip("run from a copy of the tests (the robot-install step): no pyproject.toml beside them")
    ini = tomllib.loads(path.read_text())["tool"]["pytest"]["ini_options"]
    assert 0 < int(ini["timeout"]) <= 900
