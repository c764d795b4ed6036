"""Fixtures of the record / replay / view / profiler tests.

``bundle``: $LEGATO_TEST_BUNDLE (the core-install CI step exports one) or the committed reference
bundle models/legato-x86-cpu (`make export` writes it from models/legato). ``int8_bundle``: an
int8 export of the same checkpoint (onnxruntime dynamic int8, the x86-cpu profile), made once
per session where torch is importable; its manifest holds what the export's int8 gate measured.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def bundle() -> Path:
    env = os.environ.get("LEGATO_TEST_BUNDLE")
    return Path(env) if env else ROOT / "models" / "legato-x86-cpu"


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory) -> Path:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("no torch to export the int8 bundle (the export needs the train extra)")
    from legato.cli import main

    out = tmp_path_factory.mktemp("bundle") / "legato-int8"
    ck = str(ROOT / "models" / "legato")
    args = [
        "export",
        "--checkpoint",
        ck,
        "--precision",
        "int8",
        "--out",
        str(out),
        "--episodes",
        "1",
        "--parity-samples",
        "16",
    ]
    assert main(args) == 0
    return out


@pytest.fixture(scope="session")
def recorded_run(bundle, tmp_path_factory):
    """`legato run --sim --episodes 5 --record F`: (recording path, the run's summary)."""
    import json

    from legato.cli import main

    d = tmp_path_factory.mktemp("rec")
    rec, summ = d / "run.mcap", d / "summary.json"
    args = [
        "run",
        "--bundle",
        str(bundle),
        "--sim",
        "--episodes",
        "5",
        "--quiet",
        "--record",
        str(rec),
        "--summary-json",
        str(summ),
    ]
    assert main(args) == 0
    return rec, json.loads(summ.read_text())
