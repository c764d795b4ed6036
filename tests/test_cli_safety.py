"""Nothing the user points the CLI at is destroyed (issue 8): every output-writing command
against every kind of target, through the real entry point (legato.cli.main)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

from edge.outputs import MARKER  # noqa: E402
from legato.cli import main  # noqa: E402


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run `legato ARGV` in this process; returns (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse refusals
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one error line, the last thing printed (progress lines may precede it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("legato: error:")]
    assert code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err, err
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root: (kind, content hash or link target); symlinks are not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def without(snap: dict, prefix: str) -> dict:
    return {k: v for k, v in snap.items() if k != prefix and not k.startswith(prefix + os.sep)}


# --- the property test: every command x every kind of target ---------------------------------
TARGET_KINDS = ("absent", "empty", "own", "foreign", "file", "symlink")


def _own_folder(kind: str):
    def make(p: Path, ctx) -> None:
        p.mkdir()
        (p / MARKER).write_text(json.dumps({"kind": kind}))
        (p / "stale.png").write_bytes(b"an earlier run's plot")

    return make


def _own_checkpoint(p: Path, ctx) -> None:
    shutil.copytree(ctx["ck"]["legato"], p)


def _own_dataset(p: Path, ctx) -> None:
    shutil.copyfile(ctx["demos"], p)


COMMANDS = {
    # name: (argv with {out}, make an own-kind target, output is a folder)
    "checkpoint publish": (
        ["checkpoint", "publish", "{legato}", "--to", "{out}", "--force"],
        _own_checkpoint,
        True,
    ),
    "train": (
        [
            "train",
            "--data",
            "{demos}",
            "--out",
            "{out}",
            "--steps",
            "1",
            "--batch-obs",
            "2",
            "--draws",
            "1",
            "--force",
        ],
        _own_checkpoint,
        True,
    ),  # fmt: skip
    "sim demos": (
        ["sim", "demos", "--episodes", "1", "--seed", "3", "--out", "{out}", "--force"],
        _own_dataset,
        False,
    ),
    "sim rollout": (
        ["sim", "rollout", "--checkpoint", "{legato}", "--episodes", "1", "--out", "{out}", "--force"],
        _own_folder("rollout"),
        True,
    ),  # fmt: skip
    "eval": (
        [
            "eval",
            "--checkpoints",
            "{plain}",
            "--methods",
            "naive",
            "--delays",
            "0",
            "--horizons",
            "4",
            "--episodes",
            "1",
            "--workers",
            "1",
            "--out",
            "{out}",
            "--force",
        ],
        _own_folder("report"),
        True,
    ),  # fmt: skip
    "export": (
        [
            "export",
            "--checkpoint",
            "{legato}",
            "--profile",
            "x86-cpu",
            "--out",
            "{out}",
            "--episodes",
            "0",
            "--parity-samples",
            "2",
            "--force",
        ],
        _own_folder("bundle"),
        True,
    ),  # fmt: skip
    "demo": (
        ["demo", "--episodes", "1", "--out", "{out}"],
        _own_folder("demo"),
        True,
    ),
}


def make_target(kind: str, path: Path, own, ctx, elsewhere: Path) -> None:
    if kind == "empty":
        path.mkdir()
    elif kind == "own":
        own(path, ctx)
    elif kind == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("the user's own work")
        (path / "sub").mkdir()
        (path / "sub" / "data.bin").write_bytes(os.urandom(64))
    elif kind == "file":
        path.write_text("a file the user keeps here")
    elif kind == "symlink":
        elsewhere.mkdir()
        (elsewhere / "keep.txt").write_text("behind the link")
        path.symlink_to(elsewhere)


@pytest.mark.parametrize("kind", TARGET_KINDS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_output_command_against_every_kind_of_target(command, kind, tmp_path, tiny_checkpoints,
                                                           demos_path, capsys):  # fmt: skip
    argv, own, is_folder = COMMANDS[command]
    root = tmp_path / "root"
    root.mkdir()
    out = root / ("target.npz" if not is_folder else "target")
    ctx = {"ck": tiny_checkpoints, "demos": demos_path}
    make_target(kind, out, own, ctx, root / "elsewhere")
    before = snapshot(root)
    names = {
        "out": out,
        "demos": demos_path,
        "legato": tiny_checkpoints["legato"],
        "plain": tiny_checkpoints["plain"],
    }
    args = [a.format(**names) for a in argv]
    code, _, err = cli(capsys, *args)
    allowed = kind in ("absent", "own") or (kind == "empty" and is_folder)
    after = snapshot(root)
    if allowed:
        assert code == 0, err
        assert without(after, out.name) == without(before, out.name), "bytes outside the target changed"
        if is_folder:
            assert out.is_dir() and not out.is_symlink()
            assert "stale.png" not in os.listdir(out), "a stale file of the earlier run survived"
            assert (out / MARKER).exists()
        else:
            assert out.is_file()
        assert not [p for p in os.listdir(root) if ".tmp-" in p], "a temporary was left behind"
    else:
        one_line_error(code, err, str(out))
        assert after == before, "a refused command changed something"


# --- known cases from the issue ---------------------------------------------------------------
def test_publish_into_a_folder_of_checkpoints_is_refused(tmp_path, tiny_checkpoints, capsys):
    models = tmp_path / "models"
    for name in ("legato", "plain"):
        shutil.copytree(tiny_checkpoints[name], models / name)
    before = snapshot(models)
    code, _, err = cli(capsys, "checkpoint", "publish", str(tiny_checkpoints["legato"]), "--to", str(models))
    one_line_error(code, err, "is not a checkpoint", str(models))
    assert snapshot(models) == before


def test_publish_over_an_existing_checkpoint_needs_force(tmp_path, tiny_checkpoints, capsys):
    dst = tmp_path / "mine"
    assert cli(capsys, "checkpoint", "publish", str(tiny_checkpoints["legato"]), "--to", str(dst))[0] == 0
    code, _, err = cli(capsys, "checkpoint", "publish", str(tiny_checkpoints["plain"]), "--to", str(dst))
    one_line_error(code, err, "--force")
    assert json.loads((dst / "config.json").read_text())["method"] == "legato"
    assert (
        cli(capsys, "checkpoint", "publish", str(tiny_checkpoints["plain"]), "--to", str(dst), "--force")[0]
        == 0
    )
    assert json.loads((dst / "config.json").read_text())["method"] == "plain"


def test_training_into_the_data_folder_is_refused(tmp_path, demos_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(demos_path, data / "demos.npz")
    before = snapshot(data)
    code, _, err = cli(capsys, "train", "--data", str(data / "demos.npz"), "--out", str(data), "--steps", "1")
    one_line_error(code, err, str(data))
    assert snapshot(data) == before


def test_training_over_an_existing_run_needs_resume_or_force(tmp_path, tiny_checkpoints, demos_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints["legato"], run)
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--data", str(demos_path), "--out", str(run), "--steps", "1")
    one_line_error(code, err, "--force")
    assert snapshot(run) == before


def test_resume_refuses_other_data_and_finished_runs(tmp_path, tiny_checkpoints, demos_path, capsys):
    from legato import demos as demo_io
    from sim.task import TaskConfig

    other = tmp_path / "other.npz"
    demo_io.save(demo_io.generate(TaskConfig(), seed=5, episodes=2), other)
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints["legato"], run)  # at step 4
    code, _, err = cli(capsys, "train", "--data", str(other), "--out", str(run), "--resume", "--steps", "10")
    one_line_error(code, err, "sha256", "same dataset")
    code, _, err = cli(
        capsys, "train", "--data", str(demos_path), "--out", str(run), "--resume", "--steps", "3"
    )
    one_line_error(code, err, "already at step 4", "--steps larger than 4")


def test_a_training_run_folder_always_holds_its_log(tiny_checkpoints):
    assert (Path(tiny_checkpoints["legato"]) / "log.jsonl").stat().st_size > 0


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train", "--data", "x.npz", "--out", "r", "--steps", "0"], "--steps"),
        (["train", "--data", "x.npz", "--out", "r", "--draws", "0"], "--draws"),
        (["train", "--data", "x.npz", "--out", "r", "--ckpt-every", "0"], "--ckpt-every"),
        (["train", "--data", "x.npz", "--out", "r", "--batch-obs", "0"], "--batch-obs"),
        (["train", "--data", "x.npz", "--out", "r", "--lr", "nan"], "--lr"),
        (["eval", "--out", "r", "--methods", "foo"], "'foo'"),
        (["eval", "--out", "r", "--methods", ""], "--methods"),
        (["eval", "--out", "r", "--horizons", "0"], "--horizons"),
        (["eval", "--out", "r", "--threads", "-1"], "--threads"),
        (["eval", "--out", "r", "--seed", "0"], "--seed"),
        (["sim", "rollout", "--checkpoint", "c", "--delay", "-1"], "--delay"),
        (["sim", "rollout", "--checkpoint", "c", "--method", "foo"], "--method"),
        (["sim", "demos", "--out", "d.npz", "--episodes", "0"], "--episodes"),
    ],
)
def test_bad_option_values_are_one_line_errors_naming_the_flag(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *argv)
    one_line_error(code, err, needle)
    assert os.listdir(tmp_path) == []


def test_eval_refuses_cells_that_cannot_run_and_writes_nothing(tmp_path, tiny_checkpoints, capsys):
    ck = [str(p) for p in tiny_checkpoints.values()]
    for delays in ("9", "0,9"):
        code, _, err = cli(capsys, "eval", "--checkpoints", *ck, "--delays", delays, "--horizons", "8",
                           "--out", str(tmp_path / "r"))  # fmt: skip
        one_line_error(code, err, "d=9")
    assert os.listdir(tmp_path) == []


def test_eval_refuses_a_method_without_its_checkpoint(tmp_path, tiny_checkpoints, capsys):
    code, _, err = cli(capsys, "eval", "--checkpoints", str(tiny_checkpoints["plain"]), "--methods", "legato",
                       "--out", str(tmp_path / "r"))  # fmt: skip
    one_line_error(code, err, "--methods legato")


def test_config_json_that_is_not_an_object(tmp_path, tiny_checkpoints, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["legato"], ck)
    (ck / "config.json").write_text("[1, 2, 3]")
    one_line_error(*cli(capsys, "checkpoint", "info", str(ck))[::2], "JSON object")
    (ck / "config.json").write_text(json.dumps({"format_version": 1, "policy": {}, "train": {}}))
    one_line_error(*cli(capsys, "checkpoint", "info", str(ck))[::2], "lacks")


def test_config_field_of_the_wrong_type(tmp_path, tiny_checkpoints, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["legato"], ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["policy"]["horizon"] = "16"
    (ck / "config.json").write_text(json.dumps(cfg))
    one_line_error(*cli(capsys, "checkpoint", "info", str(ck))[::2], "horizon must be int")


@pytest.mark.parametrize("break_it", ["meta", "offsets", "side"])
def test_malformed_dataset_is_one_line(tmp_path, demos_path, capsys, break_it):
    import numpy as np

    with np.load(demos_path) as z:
        arrays = {k: z[k] for k in z.files}
    if break_it == "meta":
        arrays["meta"] = np.frombuffer(json.dumps({"format_version": 1}).encode(), np.uint8)
    elif break_it == "offsets":
        arrays["offsets"] = np.array([], dtype=np.int64)
    else:
        arrays["side"] = arrays["side"][:-1]
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    code, _, err = cli(capsys, "train", "--data", str(bad), "--out", str(tmp_path / "r"), "--steps", "1")
    one_line_error(code, err, "dataset")
    assert not (tmp_path / "r").exists()


def _poison(src: Path, dst: Path, what: str) -> Path:
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    if what == "weights":
        w = load_file(str(dst / "model.safetensors"))
        name = next(k for k in w if k.startswith("head."))
        w[name] = w[name].copy()
        w[name].flat[0] = float("nan")
        save_file(w, str(dst / "model.safetensors"))
    else:
        cfg = json.loads((dst / "config.json").read_text())
        cfg["normalization"]["action_std"][0][0] = 0.0
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    "what, needle", [("weights", "non-finite weights"), ("stats", "action_std must be > 0")]
)
def test_broken_models_are_refused_everywhere(tmp_path, tiny_checkpoints, capsys, what, needle):
    bad = _poison(Path(tiny_checkpoints["legato"]), tmp_path / "bad", what)
    commands = (
        ["checkpoint", "info", str(bad)],
        ["checkpoint", "publish", str(bad), "--to", str(tmp_path / "p")],
        ["sim", "rollout", "--checkpoint", str(bad), "--episodes", "1"],
        ["sim", "rollout", "--checkpoint", str(bad), "--episodes", "1", "--out", str(tmp_path / "demo")],
    )
    for argv in commands:
        one_line_error(*cli(capsys, *argv)[::2], needle)
    assert not (tmp_path / "p").exists() and not (tmp_path / "demo").exists()


def test_rejected_actions_end_a_rollout_non_zero(tiny_checkpoints):
    """A policy whose actions the simulator must reject is a failure, not 0 % success."""
    import numpy as np

    from edge.policy import ChunkRequest
    from legato import checkpoint
    from legato.commands import PolicyFailure, refuse_rejected
    from legato.rollout import rollout
    from legato.runner import TorchPolicyRunner
    from sim.episodes import sample_episodes

    class NaNField:  # a velocity field that returns NaN (edge.denoiser.Field)
        def __init__(self, batch):
            self.batch, self.observation = batch, TorchPolicyRunner(ck).field(batch).observation

        def buffers(self):
            return (None, None, None, None)

        def encode(self):
            pass

        def velocity(self, y, t, omega, out):
            out.fill(np.nan)

    class NaNPolicy(TorchPolicyRunner):
        def field(self, batch):
            return NaNField(batch)

    ck = checkpoint.load(tiny_checkpoints["legato"])
    spec = sample_episodes(ck.task, 1000, 2)
    res = rollout(NaNPolicy(ck), "legato", ck.task, spec.scenes, spec.template, ChunkRequest(1, 8, 2), seed=1,
                  max_steps=20)  # fmt: skip
    assert res.rejected_actions > 0
    with pytest.raises(PolicyFailure, match="non-finite actions"):
        refuse_rejected(res, "test")


def test_held_out_refusal_names_a_seed_that_is_held_out(tiny_checkpoints, capsys):
    code, _, err = cli(
        capsys, "sim", "rollout", "--checkpoint", str(tiny_checkpoints["plain"]), "--seed", "0"
    )
    line = one_line_error(code, err, "trained on", "held-out seed such as 1000")
    from edge.policy import held_out_seed

    assert held_out_seed(1000) != 1000 and "seed 0 " in line


def test_rollout_writes_its_report_with_out(tmp_path, tiny_checkpoints, capsys):
    out = tmp_path / "roll"
    code, stdout, err = cli(capsys, "sim", "rollout", "--checkpoint", str(tiny_checkpoints["legato"]),
                            "--episodes", "2", "--out", str(out))  # fmt: skip
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(stdout) and summary["episodes"] == 2
    assert (out / "episode.png").stat().st_size > 1000


def test_every_option_shows_its_range_or_choices_and_default(capsys):
    import argparse
    import re

    from edge.cliargs import RangeHelpFormatter, float_in, int_in, int_list
    from legato.cli import build_parser

    def walk(p: argparse.ArgumentParser):
        yield p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sp in a.choices.values():
                    yield from walk(sp)

    for parser in walk(build_parser()):
        for a in parser._actions:
            if not a.option_strings or a.nargs == 0 or isinstance(a, argparse._HelpAction):
                continue
            name = f"{parser.prog} {a.option_strings[0]}"
            assert a.help, f"{name} has no help"
            text = RangeHelpFormatter("x")._get_help_string(a)
            if a.type in (int, float) or isinstance(a.type, int_in | float_in | int_list):
                # a typed range from edge.cliargs, or (firmware_bridge, which may not import edge)
                # the range stated in words; checked while parsing or before any work either way
                assert re.search(r"\d\s*\.\.|>=?\s*\d|<=?\s*\d", text), f"{name}: no valid range in {text!r}"
            if a.default not in (None, False) and a.required is False:
                assert "default" in text, f"{name}: no default in {text!r}"


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("legato-edge ")


def test_no_traceback_without_debug_and_one_with_it(tmp_path):
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "legato.cli", "checkpoint", "info", str(tmp_path / "none")]
    quiet = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "LEGATO_DEBUG": "1"}
    )
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_published_files_are_readable_by_the_service_user(tmp_path, tiny_checkpoints):
    import subprocess
    import sys

    dst = tmp_path / "pub"
    code = f"import os; os.umask(0o077); from legato.cli import main; raise SystemExit(main(['checkpoint', 'publish', {str(tiny_checkpoints['legato'])!r}, '--to', {str(dst)!r}]))"  # noqa: E501
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert dst.stat().st_mode & 0o777 == 0o755
    for f in dst.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_an_interrupted_eval_keeps_the_old_report_and_resumes_its_finished_cells(tmp_path, tiny_checkpoints,
                                                                                monkeypatch):  # fmt: skip
    from legato import evaluate as E

    out = tmp_path / "report"
    cfg = E.EvalConfig(checkpoints=(str(tiny_checkpoints["plain"]),), methods=("naive", "sync"), delays=(0,),
                       horizons=(4,), episodes=1, workers=1, compute_repeats=1)  # fmt: skip
    E.evaluate(cfg, out, progress=False)
    first = snapshot(out)
    calls = []
    real = E.run_cell

    def interrupted(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(E, "run_cell", interrupted)
    with pytest.raises(E.EvalInterrupted, match="1 of 2 cells are kept.*--resume"):
        E.evaluate(cfg, out, progress=False, replace=True)
    assert snapshot(out) == first, "Ctrl-C changed the previous report"
    calls.clear()
    report = E.evaluate(cfg, out, progress=False, resume=True)
    assert calls == ["sync"] and report["resumed_cells"] == 1
    assert {c["method"] for c in report["cells"]} == {"naive", "sync"}
    assert not E.partial_path(out).exists()


def test_eval_refuses_the_seed_a_checkpoint_was_trained_on(tmp_path, tiny_checkpoints, capsys):
    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoints["plain"], ck)
    cfg = json.loads((ck / "config.json").read_text())
    cfg["data"]["seed"] = 1000  # a checkpoint trained on the default evaluation set
    (ck / "config.json").write_text(json.dumps(cfg))
    code, _, err = cli(
        capsys, "eval", "--checkpoints", str(ck), "--methods", "naive", "--out", str(tmp_path / "r")
    )
    one_line_error(code, err, "seed 1000", "held-out seed such as 1001")
    assert not (tmp_path / "r").exists()


def test_ctrl_c_in_eval_says_how_to_resume(tmp_path, tiny_checkpoints, monkeypatch, capsys):
    from legato import evaluate as E

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(E, "run_cell", interrupted)
    code, _, err = cli(capsys, "eval", "--checkpoints", str(tiny_checkpoints["plain"]), "--methods", "naive",
                       "--delays", "0", "--horizons", "4", "--episodes", "1", "--workers", "1",
                       "--out", str(tmp_path / "r"))  # fmt: skip
    assert code == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("legato: interrupted") and "rerun the same command with --resume" in last
