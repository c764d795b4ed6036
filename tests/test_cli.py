"""The `legato` command line: subcommands listed, bad input answered in one line."""

import subprocess
import sys

import pytest


def legato(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "legato.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def _one_line_error(proc, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("legato: error:"), proc.stderr
    assert needle in lines[0], lines[0]


def test_help_lists_the_subcommands():
    out = legato("--help").stdout
    for cmd in ("train", "sim", "checkpoint", "demo", "eval", "firmware"):
        assert cmd in out


def test_help_does_not_import_torch():
    code = "import sys; sys.modules['torch'] = None; from legato.cli import build_parser; build_parser()"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_missing_dataset(tmp_path):
    _one_line_error(
        legato("train", "--data", str(tmp_path / "x.npz"), "--out", str(tmp_path / "r")), "not found"
    )
    assert not (tmp_path / "r").exists()


def test_training_on_a_gpu_this_torch_cannot_see(demos_path, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    proc = legato("train", "--data", str(demos_path), "--out", str(tmp_path / "r"), "--device", "cuda")
    _one_line_error(proc, "sees no CUDA GPU")
    assert not (tmp_path / "r").exists()


def test_corrupt_dataset(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    _one_line_error(legato("train", "--data", str(bad), "--out", str(tmp_path / "r")), "corrupt")
    assert not (tmp_path / "r").exists()


def test_missing_checkpoint(tmp_path):
    _one_line_error(legato("sim", "rollout", "--checkpoint", str(tmp_path / "none")), "checkpoint not found")


def test_delay_beyond_trained_d_max(tiny_checkpoints):
    proc = legato(
        "sim", "rollout", "--checkpoint", str(tiny_checkpoints["legato"]), "--delay", "6", "--horizon", "8"
    )
    _one_line_error(proc, "d_max")


def test_rollout_refuses_the_training_seed(tiny_checkpoints):
    proc = legato("sim", "rollout", "--checkpoint", str(tiny_checkpoints["plain"]), "--seed", "0")
    _one_line_error(proc, "held-out")


@pytest.mark.parametrize("method", ["legato", "naive"])
def test_rollout_prints_success_and_completion(tiny_checkpoints, method):
    name = "legato" if method == "legato" else "plain"
    proc = legato("sim", "rollout", "--checkpoint", str(tiny_checkpoints[name]), "--episodes", "2",
                  "--delay", "1", "--method", method)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"success_rate"' in proc.stdout and '"completion_s"' in proc.stdout


def test_a_reader_that_left_the_pipe_ends_the_command_quietly():
    """`legato profiles list | head -0`: before, a BrokenPipeError traceback and exit 1."""
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes its first line
    try:
        proc = subprocess.run([sys.executable, "-m", "legato.cli", "profiles", "list"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == ""
