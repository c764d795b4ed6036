"""`legato run --sim --remote` through an emulated network: 30 ms +- 10 ms delay and 1 % loss
between the robot (this namespace) and the server (a namespace the test makes), tc netem where
the kernel has it, else the TUN forwarder in netemu.py with the same parameters."""

from __future__ import annotations

import pytest
from remote_helpers import RemoteRun, start_serve, stop

netemu = pytest.importorskip("netemu")

WHY = netemu.unavailable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"emulated network: {WHY}")


def test_run_sim_remote_through_delay_jitter_and_loss():
    with netemu.EmulatedLink(delay_ms=30, jitter_ms=10, loss=0.01, seed=0) as link:
        proc, port = start_serve("--quiet", "--host", link.there, prefix=("ip", "netns", "exec", link.ns))
        try:
            s = RemoteRun(f"ws://{link.there}:{port}", episodes=2).start().join()
        finally:
            stop(proc)
    assert s["episodes"] == 2 and s["errors"] == []
    assert s["chunk.network_ms.p50"] > 20  # the emulated delay is the network stage
    assert s["chunk.latency_ms.p50"] > s["chunk.network_ms.p50"]  # from the frame's capture
    assert s["delay_mode"] >= 2  # d from the measured latency (50 Hz: 20 ms a step)
    assert s["nan_setpoints"] == 0 and s["chunks"] == s["remote.chunks"]
