"""Fixtures of the runtime tests: a real bundle of the committed Legato model.

The bundle comes from $LEGATO_TEST_BUNDLE (the Python 3.10 core-install CI step exports one
with the main venv first: that venv has torch, the robot install has none), or is exported
here with `legato export` when torch is importable; otherwise the tests that need it skip.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    env = os.environ.get("LEGATO_TEST_BUNDLE")
    if env:
        return Path(env)
    if importlib.util.find_spec("torch") is None:
        pytest.skip("no torch to export a bundle and LEGATO_TEST_BUNDLE is not set")
    from legato.cli import main

    out = tmp_path_factory.mktemp("bundle") / "legato-fp32"
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(ROOT / "models" / "legato"),
                "--out",
                str(out),
                "--episodes",
                "0",
                "--parity-samples",
                "2",
            ]
        )
        == 0
    )
    return out


@pytest.fixture
def video(tmp_path) -> str:
    """A short MJPG file: the camera of a --port run (OpenCV plays files like a device)."""
    import numpy as np

    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "cam.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(5):
        w.write(np.full((48, 64, 3), 40 * k, np.uint8))
    w.release()
    return path
