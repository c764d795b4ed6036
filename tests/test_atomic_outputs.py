"""edge.outputs: the one helper behind every output. A kill at any rename step leaves the old
or the new folder, whole and loadable; a reader never sees the target missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.errors import OutputError
from edge.outputs import MARKER, atomic_file, atomic_folder, check_target, exchange, is_kind

ROOT = Path(__file__).resolve().parents[1]


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "y").write_text("b")
    if not exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this filesystem has no RENAME_EXCHANGE")
    assert os.listdir(tmp_path / "a") == ["y"] and os.listdir(tmp_path / "b") == ["x"]


def test_a_failed_body_leaves_the_old_folder_and_no_temporary(tmp_path):
    with atomic_folder(tmp_path / "out", "report") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out", "report", replace=True) as tmp:
        (tmp / "v").write_text("2")
        raise RuntimeError("interrupted")
    assert (tmp_path / "out" / "v").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_ctrl_c_in_the_body_keeps_the_previous_folder(tmp_path):
    with atomic_folder(tmp_path / "out", "report") as tmp:
        (tmp / "old.png").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_folder(tmp_path / "out", "report", replace=True) as tmp:
        (tmp / "new.png").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p for p in os.listdir(tmp_path / "out") if p != MARKER) == ["old.png"]


def test_enospc_during_the_write_is_one_line_and_changes_nothing(tmp_path):
    def full(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    (tmp_path / "d.bin").write_bytes(b"old")
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_file(tmp_path / "d.bin", full, replace=True)
    assert (tmp_path / "d.bin").read_bytes() == b"old" and os.listdir(tmp_path) == ["d.bin"]


def test_a_folder_is_never_turned_into_a_link_nor_a_file_into_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        check_target(tmp_path / "f", "report", replace=True)
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "d")
    with pytest.raises(OutputError, match="symbolic link"):
        check_target(tmp_path / "l", "report", replace=True)
    with pytest.raises(OutputError, match="is a folder"):
        atomic_file(tmp_path / "d", b"x", replace=True)


def test_markers_and_legacy_checkpoints_are_recognised(tmp_path):
    with atomic_folder(tmp_path / "r", "report") as tmp:
        (tmp / "results.json").write_text("{}")
    assert is_kind(tmp_path / "r", "report") and not is_kind(tmp_path / "r", "bundle")
    assert is_kind(ROOT / "models" / "legato", "checkpoint")
    assert json.loads((tmp_path / "r" / MARKER).read_text())["kind"] == "report"


def test_a_reader_polling_the_path_always_sees_a_whole_folder(tmp_path):
    target = tmp_path / "out"
    with atomic_folder(target, "report") as tmp:
        (tmp / "a").write_text("0")
        (tmp / "b").write_text("0")
    stop, seen, bad, retired = threading.Event(), [0], [], [0]

    def read(fd: int, name: str) -> str:
        f = os.open(name, os.O_RDONLY, dir_fd=fd)
        try:
            return os.read(f, 64).decode()
        finally:
            os.close(f)

    def poll():
        # A reader opens the folder once and reads inside it (as a loader does): it must find
        # the folder there every time, and both files from the same write.
        while not stop.is_set():
            try:
                fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError as e:
                bad.append(str(e))
                continue
            try:
                a, b = read(fd, "a"), read(fd, "b")
            except FileNotFoundError:
                retired[0] += 1  # the old folder, emptied after the swap: files already open stay readable
                continue
            finally:
                os.close(fd)
            if a != b:
                bad.append(f"mixed {a} {b}")
            seen[0] += 1

    t = threading.Thread(target=poll)
    t.start()
    try:
        for i in range(1, 60):
            with atomic_folder(target, "report", replace=True) as tmp:
                (tmp / "a").write_text(str(i))
                (tmp / "b").write_text(str(i))
    finally:
        stop.set()
        t.join(10)
    assert not bad, bad[:3]
    assert seen[0] > 0


# --- fault injection: kill the writer at every rename step -----------------------------------
KILLER = r"""
import os, shutil, sys
import edge.outputs as o
k, what, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
steps = [0]

def step(fn):
    def wrapped(*a, **kw):
        if steps[0] == k:
            os._exit(9)  # killed before this step
        steps[0] += 1
        return fn(*a, **kw)
    return wrapped

o.os.rename = step(os.rename)
o.exchange = step(o.exchange)
o.shutil.rmtree = step(shutil.rmtree)
if what == "publish":
    from legato.checkpoint import publish
    publish(src, dst, replace=True)
else:  # a training run's checkpoint write (weights, optimizer, trainer state, log)
    import torch
    from legato import checkpoint
    ck = checkpoint.load(src)
    opt = torch.optim.AdamW(ck.model.parameters())
    meta = dict(ck.meta, training={"step": 99})
    checkpoint.save(dst, ck.model, ck.train_cfg, ck.norm, ck.task, meta, opt, {"step": 99}, log="new\n")
print("steps", steps[0])
"""


@pytest.mark.parametrize("what", ["publish", "save"])
def test_a_kill_at_any_rename_step_leaves_a_whole_loadable_checkpoint(
    what, tmp_path, tiny_checkpoints, demos_path, tiny
):
    pytest.importorskip("torch")
    from legato import checkpoint
    from legato.config import TrainConfig
    from legato.train import train

    old_src, new_src = tiny_checkpoints["plain"], tiny_checkpoints["legato"]
    outcomes = []
    for k in range(8):
        dst = tmp_path / f"k{k}"
        shutil.copytree(old_src, dst)  # the previous checkpoint (a training run of 'plain')
        proc = subprocess.run([sys.executable, "-c", KILLER, str(k), what, str(new_src), str(dst)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        ck = checkpoint.load(dst)  # whole and loadable, whichever it is
        outcomes.append(ck.method)
        if proc.returncode == 0:
            total = int(proc.stdout.split()[-1])
            assert k >= total
            break
        assert proc.returncode == 9, proc.stderr[-2000:]
        if what == "save":
            assert (dst / "log.jsonl").exists() and (dst / "trainer.json").exists()
            step = json.loads((dst / "trainer.json").read_text())["step"]
            assert step == (99 if ck.method == "legato" else 4)
    else:
        pytest.fail("the write never completed within 8 steps")
    assert outcomes[0] == "plain" and outcomes[-1] == "legato"
    if what == "save":  # --resume works from whatever a kill left behind (here: the old run at step 4)
        cfg = TrainConfig(method="plain", steps=5, batch_obs=2, draws=1, warmup=1, ckpt_every=100)
        train(demos_path, tmp_path / "k0", cfg, tiny, resume=True, show_progress=False)
        assert json.loads((tmp_path / "k0" / "trainer.json").read_text())["step"] == 5


LONG = "n" * 300  # longer than NAME_MAX (255) on every Linux filesystem
REPO = Path(__file__).resolve().parents[1]
LONG_NAME_COMMANDS = {
    "sim demos": ["sim", "demos", "--episodes", "1", "--out", "{long}.npz"],
    "export": ["export", "--checkpoint", str(REPO / "models/legato"), "--out", "{long}", "--episodes", "0"],
    "profile": [
        "profile",
        "--bundle",
        str(REPO / "models/legato-x86-cpu"),
        "--synthetic",
        "--seconds",
        "1",
        "--out",
        "{long}",
    ],  # fmt: skip
    "demo": ["demo", "--episodes", "1", "--out", "{long}"],
    "checkpoint publish": ["checkpoint", "publish", str(REPO / "models/legato"), "--to", "{long}"],
    "flash": [
        "flash",
        "--bundle",
        str(REPO / "models/legato-x86-cpu"),
        "--profile",
        "x86-cpu",
        "--target",
        "{long}",
    ],  # fmt: skip
}


@pytest.mark.parametrize("command", list(LONG_NAME_COMMANDS))
def test_an_over_long_output_name_is_one_line_for_every_command(command, tmp_path, capsys):
    """ENAMETOOLONG surfaced as a traceback from whichever call met it first (issue 19 part 5)."""
    pytest.importorskip("torch")
    from legato.cli import main

    argv = [a.format(long=tmp_path / LONG) for a in LONG_NAME_COMMANDS[command]]
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in err and lines[-1].startswith("legato: error:"), err
    assert "too long" in lines[-1] or "the filesystem allows 255" in lines[-1], lines[-1]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_path_length_check_counts_the_temporary(tmp_path):
    from edge.outputs import TEMP_SUFFIX, check_path_length

    check_path_length(tmp_path / ("a" * (255 - TEMP_SUFFIX)))  # fits with its temporary
    with pytest.raises(OutputError, match="less 14 for the temporary"):
        check_path_length(tmp_path / ("a" * (256 - TEMP_SUFFIX)))
    with pytest.raises(OutputError, match="choose a shorter name"):
        check_path_length(tmp_path / ("b" * 300) / "out")  # a parent folder that cannot be made
