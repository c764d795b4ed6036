"""openpi-client (PyPI, unchanged, in its own venv: it needs numpy < 2) against `legato serve`:
the metadata, chunks of the right shape with openpi's timing keys, the API key header it sends,
and a bad request as openpi-client reports a server error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from remote_helpers import ServerThread, make_service

pytestmark = pytest.mark.slow  # builds a venv the first time (.ci/run runs it)

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "legato-edge" / "openpi-client-venv"

CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from openpi_client import websocket_client_policy as wcp

    port, key = int(sys.argv[1]), (sys.argv[2] or None)
    policy = wcp.WebsocketClientPolicy("127.0.0.1", port, api_key=key)
    meta = policy.get_server_metadata()
    rng = np.random.default_rng(0)
    out = {"numpy": np.__version__, "meta_keys": sorted(meta), "replies": []}
    for _ in range(3):
        obs = {}
        for k, t in meta["observation"].items():
            if t.get("type") == "text":  # openpi's prompt; skipped where token ids may go instead
                if "or" not in t:
                    obs[k] = "reach the red target"
                continue
            dt = np.dtype(t["dtype"])
            lo, hi = t.get("range", (0, 255))
            obs[k] = (rng.integers(lo, hi + 1, t["shape"]) if dt.kind in "iu"
                      else rng.standard_normal(t["shape"])).astype(dt)
        r = policy.infer(obs)
        out["replies"].append({"shape": list(r["actions"].shape), "dtype": r["actions"].dtype.str,
                               "server_timing": sorted(r["server_timing"]),
                               "policy_timing": sorted(r["policy_timing"]),
                               "finite": bool(np.isfinite(r["actions"]).all())})
    bad = dict(obs)
    bad["observation.state"] = np.zeros(2, np.float32)
    try:
        policy.infer(bad)
    except RuntimeError as e:
        out["error"] = str(e)
    print(json.dumps(out))
    """
)


def openpi_python() -> Path:
    py = CACHE / "bin" / "python"
    if py.exists():
        return py
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([sys.executable, "-m", "venv", str(CACHE)], capture_output=True, text=True)
    if r.returncode == 0:
        # openpi-client 0.1.2 imports typing_extensions without declaring it
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "openpi-client", "numpy<2", "typing_extensions"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if r.returncode != 0:
        import shutil

        shutil.rmtree(CACHE, ignore_errors=True)
        pytest.skip(f"cannot install openpi-client into a venv: {r.stderr.strip()[-300:]}")
    return py


@pytest.mark.parametrize("key", [None, "k3y-from-file"])
def test_openpi_client_round_trip_unchanged(key):
    py = openpi_python()
    server = ServerThread(make_service(api_key=key))
    try:
        r = subprocess.run(
            [str(py), "-c", CLIENT, str(server.port), key or ""], capture_output=True, text=True, timeout=120
        )
    finally:
        server.stop()
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["numpy"].startswith("1.")
    assert {"observation", "action", "num_steps", "d_max", "control_hz"} <= set(out["meta_keys"])
    for rep in out["replies"]:
        assert rep["shape"] == [16, 3] and rep["dtype"] == "<f4" and rep["finite"]
        assert "infer_ms" in rep["server_timing"] and rep["policy_timing"] == ["infer_ms"]
    assert "prev_total_ms" in out["replies"][1]["server_timing"]
    assert "Error in inference server" in out["error"] and "the bundle needs <f4 (6,)" in out["error"]
