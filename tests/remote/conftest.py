"""Fixtures of the remote-inference tests (helpers in remote_helpers.py)."""

from __future__ import annotations

import pytest
from remote_helpers import ServerThread, make_service


@pytest.fixture
def server():
    """The reference bundle served by a websockets server in a thread of this process."""
    s = ServerThread(make_service())
    yield s
    s.stop()
