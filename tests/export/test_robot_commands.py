"""`legato profiles` and `legato bundle` are robot-side: they run with torch unimportable, and
the committed reference bundle verifies (its parity is recomputed, not re-read, in
test_bundle_verify.py::test_the_committed_bundle_is_the_committed_checkpoints_export)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "models/legato-x86-cpu"


def legato_without_torch(*args: str) -> subprocess.CompletedProcess:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnxscript'] = None\n"
        "from legato.cli import main\nrc = main(sys.argv[1:])\n"
        "bad = [m for m in ('export.pipeline', 'export.graphs', 'tensorrt') if m in sys.modules]\n"
        "assert not bad, bad\nraise SystemExit(rc)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_profiles_commands_without_torch():
    res = legato_without_torch("profiles", "list")
    assert res.returncode == 0, res.stderr
    from edge.profiles import PROFILE_DIR

    shipped = sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))
    assert [line.split()[0] for line in res.stdout.splitlines()] == shipped  # one line per shipped profile
    assert {"jetson-orin-nano-8gb", "x86-cpu-feetech"} <= set(shipped)
    res = legato_without_torch("profiles", "show", "jetson-thor")
    assert res.returncode == 0 and '"fp8": true' in res.stdout
    res = legato_without_torch("profiles", "show", "nope")
    assert res.returncode == 2 and res.stderr.startswith("legato: error: unknown profile 'nope'")
    assert len(res.stderr.splitlines()) == 1


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference bundle not generated (make export)")
def test_reference_bundle_verifies_without_torch():
    res = legato_without_torch("bundle", "verify", str(REFERENCE))
    assert res.returncode == 0, res.stderr
    assert "ok (4 files, graphs prefix, flow_head, fused, fp32)" in res.stdout  # the graphs, tokenizer.json
    res = legato_without_torch("bundle", "info", str(REFERENCE))
    assert res.returncode == 0 and "flow_head.onnx (fp32, opset 17" in res.stdout
    res = legato_without_torch("bundle", "verify", str(ROOT / "models/legato"))
    assert res.returncode == 2 and "not a bundle (no manifest.json)" in res.stderr


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference bundle not generated (make export)")
def test_bundle_infer_runs_without_torch(tmp_path):
    import numpy as np

    obs = tmp_path / "obs.npz"
    np.savez(obs, **{"observation.images.top": np.full((48, 64, 3), 90, np.uint8),
                     "observation.state": np.array([0.6, 2.6, -1.7, 0, 0, 0], np.float32),
                     "observation.language.tokens": np.array([2, 5, 11, 8])})  # fmt: skip
    res = legato_without_torch("bundle", "infer", "--bundle", str(REFERENCE), "--obs", str(obs), "--out",
                               str(tmp_path / "a.npy"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (16, 3) and np.all(np.isfinite(a))
