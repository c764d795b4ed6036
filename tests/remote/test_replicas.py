"""`legato serve --replicas 2` on a local Ray instance (Ray Serve's proxy, two replica processes):
two and four simulated robots, each a `legato run --sim --remote` process, each session on one
replica for its whole life, the sessions spread over both, every episode run."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from remote_helpers import LEGATO, ROOT, start_serve, stop

pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install 'legato-edge[serve]'")
pytestmark = pytest.mark.slow  # a local Ray instance takes ~30 s to start (.ci/run runs these)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def replicas():
    proc, port = start_serve("--replicas", "2", "--quiet", port=free_port(), timeout_s=240)
    yield port
    stop(proc)
    assert proc.wait(60) == 0


def robots(port: int, n: int, tmp_path, episodes: int = 2) -> list[dict]:
    procs = []
    for i in range(n):
        out = tmp_path / f"robot{i}.json"
        cmd = [
            *LEGATO,
            "run",
            "--remote",
            f"ws://127.0.0.1:{port}",
            "--sim",
            "--episodes",
            str(episodes),
            "--seed",
            str(1000 + i),
            "--quiet",
            "--summary-json",
            str(out),
        ]
        procs.append((subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True), out))
        time.sleep(0.3)  # the proxy picks the replica with fewer open sessions
    summaries = []
    for p, out in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        summaries.append(json.loads(out.read_text()))
    return summaries


@pytest.mark.parametrize("n", [2, 4])
def test_robots_against_two_replicas(replicas, n, tmp_path):
    ss = robots(replicas, n, tmp_path)
    for s in ss:
        assert s["episodes"] == 2 and s["errors"] == [] and s["remote.errors"] == []
        assert s["chunks"] == s["remote.chunks"] and s["chunks_unavailable"] == 0
        assert len(s["remote.servers_seen"]) == 1  # the session stuck to one replica
    used = {s["remote.servers_seen"][0] for s in ss}
    assert len(used) == 2, f"all {n} sessions on {used}"  # both replicas served


def test_replicas_refuse_a_bad_request_and_keep_serving(replicas):
    from websockets.sync.client import connect

    from edge.remote import wire

    with connect(f"ws://127.0.0.1:{replicas}", compression=None, max_size=None, proxy=None) as c:
        meta = wire.unpackb(c.recv(timeout=10), 1 << 24)
        assert meta["protocol"] == "openpi-websocket"
        c.send(wire.packb({"observation.state": 1}))
        line = c.recv(timeout=10)
        assert isinstance(line, str) and "missing observation.image" in line
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{replicas}/healthz').read())",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "OK" in r.stdout
