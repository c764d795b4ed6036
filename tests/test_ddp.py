"""Multi-process training with DistributedDataParallel on gloo (slow: `make test-slow`)."""

import subprocess
import sys

import pytest

pytest.importorskip("torch")


@pytest.mark.slow
def test_torchrun_two_processes_trains_and_rank_zero_writes_the_checkpoint(demos_path, tmp_path):
    from legato import checkpoint

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "legato.train", "--data", str(demos_path), "--method", "legato", "--out", str(out),
           "--steps", "4", "--batch-obs", "4", "--draws", "2", "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = checkpoint.load(out)
    assert ck.meta["training"]["world_size"] == 2
    assert ck.meta["training"]["step"] == 4
