"""The clock process: SIGTERM (the parent's terminate, its death signal) always ends it, however
many arrive at once; the CPU wake-up latency it holds (Linux PM QoS) is held and released."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge.clock import CPU_DMA_LATENCY, hold_wake_latency

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import time
from edge.clockproc import TermFlag
stop = TermFlag().install()
print("ready", flush=True)
while not stop.is_set():
    time.sleep(0.001)
"""


def test_a_burst_of_sigterms_always_ends_the_clock_process() -> None:
    """Before: the handler was threading.Event.set, which takes a lock; a second SIGTERM landing
    inside the first handler deadlocked it (3 of 10 such children hung on this machine), and an
    orphaned clock process kept ticking at SCHED_FIFO with the port held."""
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for _ in range(3000):
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
            assert proc.wait(60) in (0, -signal.SIGTERM)  # ended (a late one may land after the loop)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)


def current_wake_latency_us() -> int:
    """The kernel's CPU wake-up latency limit now (every request's minimum; 2e9 when none)."""
    with open(CPU_DMA_LATENCY, "rb") as f:
        return struct.unpack("=i", f.read(4))[0]


def test_the_wake_latency_request_is_a_native_s32_kept_while_its_descriptor_is_open(tmp_path) -> None:
    qos = tmp_path / "cpu_dma_latency"
    qos.write_bytes(b"")
    fd = hold_wake_latency(25, str(qos))
    assert fd is not None
    os.close(fd)
    assert qos.read_bytes() == struct.pack("=i", 25)
    assert hold_wake_latency(0, str(tmp_path / "absent")) is None  # not Linux, or no such file: None


@pytest.mark.skipif(not os.access(CPU_DMA_LATENCY, os.W_OK), reason="needs root: /dev/cpu_dma_latency")
def test_the_kernel_holds_the_wake_latency_until_the_descriptor_closes() -> None:
    before = current_wake_latency_us()
    fd = hold_wake_latency(0)
    assert fd is not None
    try:
        assert current_wake_latency_us() == 0
    finally:
        os.close(fd)
    assert current_wake_latency_us() == before


def _blas_threads(q: Any) -> None:
    q.put(os.environ.get("OPENBLAS_NUM_THREADS"))


def test_the_clock_process_is_spawned_with_single_threaded_blas(monkeypatch) -> None:
    """A child started inside _environment(CLOCK_ENV), as ClockProcess.open starts the clock process,
    loads numpy's OpenBLAS with one thread (no SCHED_OTHER worker a FIFO thread could wait on);
    the parent's own environment is left as it was."""
    import multiprocessing as mp

    from edge.clockproc import CLOCK_ENV, _environment

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with _environment(CLOCK_ENV):
        p = ctx.Process(target=_blas_threads, args=(q,))
        p.start()
    assert q.get(timeout=60) == "1"
    p.join(60)
    assert os.environ["OPENBLAS_NUM_THREADS"] == "7"
