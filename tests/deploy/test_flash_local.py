"""`legato flash` to local folders: copy only what changed, atomic switch, rollback, fleet lines,
and the refusals that leave the target untouched."""

from __future__ import annotations

import os
from pathlib import Path

from bundles import make_bundle

from deploy import agent
from legato.cli import main


def flash(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["flash", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def snapshot(dest: Path) -> dict[str, object]:
    """Every path under dest with its link target or content: a test that nothing changed."""
    out: dict[str, object] = {}
    for p in sorted(dest.rglob("*")):
        rel = str(p.relative_to(dest))
        out[rel] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def current(dest: Path) -> str:
    return os.readlink(dest / "current")


def test_flash_switch_copy_only_changed_and_rollback(tmp_path, capsys, bundles):
    b1, b2 = bundles
    dest = tmp_path / "robot"
    rc, out, _ = flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 0 and "4 files sent" in out and "every sha256 verified" in out
    first = current(dest)
    assert first.startswith("releases/tiny-") and (dest / "current/profile.toml").is_file()
    assert agent.read_marker_kind(dest / first) == "release"

    rc, out, _ = flash(capsys, "--bundle", str(b2), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 0 and "2 files sent" in out and "2 already there" in out  # manifest + the changed file
    second = current(dest)
    assert second != first and os.readlink(dest / "previous") == first
    assert (dest / "current/data/blob.bin").read_bytes() == b"weights v2"
    # unchanged files are hard links, not copies
    assert (dest / second / "prefix.onnx").stat().st_ino == (dest / first / "prefix.onnx").stat().st_ino

    rc, out, _ = flash(capsys, "--rollback", "--target", str(dest))
    assert rc == 0 and current(dest) == first and os.readlink(dest / "previous") == second
    assert (dest / "current/data/blob.bin").read_bytes() == b"weights v1"

    rc, out, _ = flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 0 and "was already current" in out and "0 files sent" in out


def test_corrupt_file_on_target_is_detected_and_repaired(tmp_path, capsys, bundles):
    b1, _ = bundles
    dest = tmp_path / "robot"
    assert flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))[0] == 0
    blob = dest / "current/data/blob.bin"
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot!!!")
    rc, _, err = flash(capsys, "--check", "--target", str(dest))
    assert rc == 2 and err.count("\n") == 1 and "data/blob.bin is corrupt" in err
    rc, out, _ = flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 0 and "1 files sent" in out  # only the damaged file travels again
    assert flash(capsys, "--check", "--target", str(dest))[0] == 0


def test_bundle_failing_verify_is_refused_before_any_target_is_touched(tmp_path, capsys, bundles):
    b1, _ = bundles
    (b1 / "data/blob.bin").write_bytes(b"tampered")
    dest = tmp_path / "robot"
    rc, out, err = flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 2 and out == "" and err.startswith("legato: error: ") and err.count("\n") == 1
    assert "corrupt" in err and not dest.exists()


def test_full_disk_is_refused_with_nothing_changed(tmp_path, capsys, bundles, monkeypatch):
    b1, b2 = bundles
    dest = tmp_path / "robot"
    assert flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))[0] == 0
    before = snapshot(dest)
    monkeypatch.setattr(agent, "_free_bytes", lambda _dest: 1 << 20)  # 1 MB left on the target
    rc, out, err = flash(capsys, "--bundle", str(b2), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 2 and err.count("\n") == 1 and "disk is too full" in err and "nothing was changed" in err
    assert snapshot(dest) == before


def test_profile_not_matching_the_target_is_refused(tmp_path, capsys):
    """A Jetson profile's [device] against this x86 machine's doctor answers."""
    b = make_bundle(tmp_path / "nx", profile="jetson-orin-nx-16gb")
    dest = tmp_path / "robot"
    rc, _, err = flash(capsys, "--bundle", str(b), "--profile", "jetson-orin-nx-16gb", "--target", str(dest))
    assert rc == 2 and err.count("\n") == 1
    assert "does not match the target (profile soc orin, target x86)" in err and "nothing was changed" in err
    assert not dest.exists()


def test_foreign_folder_is_refused(tmp_path, capsys, bundles):
    dest = tmp_path / "home"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    rc, _, err = flash(capsys, "--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 2 and "not a flashed folder" in err and sorted(os.listdir(dest)) == ["notes.txt"]


def test_fleet_prints_one_line_per_device(tmp_path, capsys, bundles):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    targets = [str(tmp_path / "arm1"), str(tmp_path / "arm2"), str(blocker / "arm3")]
    argv = ["--bundle", str(bundles[0]), "--profile", "x86-cpu"]
    for t in targets:
        argv += ["--target", t]
    rc, out, _ = flash(capsys, *argv)
    lines = out.strip().splitlines()
    assert rc == 1 and len(lines) == 4 and lines[-1] == "2 of 3 targets ok, 1 failed"
    by_target = {ln.split(": ", 1)[0]: ln for ln in lines[:-1]}
    assert by_target[targets[0]].startswith(f"{targets[0]}: ok, current -> tiny-")
    assert by_target[targets[1]].startswith(f"{targets[1]}: ok, current -> tiny-")
    assert (
        by_target[targets[2]].startswith(f"{targets[2]}: FAILED, ") and "is a file" in by_target[targets[2]]
    )


def test_rollback_without_previous_is_one_line(tmp_path, capsys, bundles):
    dest = tmp_path / "robot"
    assert flash(capsys, "--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", str(dest))[0] == 0
    before = snapshot(dest)
    rc, _, err = flash(capsys, "--rollback", "--target", str(dest))
    assert rc == 2 and "no previous release" in err and snapshot(dest) == before


def test_interrupted_install_leaves_previous_current(tmp_path, capsys, bundles, monkeypatch):
    """A failure (here: Ctrl-C) while the release is assembled leaves the old one current and whole."""
    b1, b2 = bundles
    dest = tmp_path / "robot"
    assert flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))[0] == 0
    first = current(dest)

    def interrupted(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(agent, "_sync_tree", interrupted)  # the last step before the swap
    rc, _, err = flash(capsys, "--bundle", str(b2), "--profile", "x86-cpu", "--target", str(dest))
    assert rc == 130 and current(dest) == first
    assert [p.name for p in (dest / "releases").iterdir()] == [Path(first).name]  # no half release
    monkeypatch.undo()
    assert flash(capsys, "--check", "--target", str(dest))[0] == 0


NX_FACTS = {
    "soc": "orin",
    "model": "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
    "l4t": "36.4.3",
    "jetpack": "6.1/6.2",
    "tensorrt": "10.3.0",
    "cuda": "12.6",
    "gpu": "Orin",
    "compute_capability": "8.7",
}


def test_engines_are_built_on_the_target_inside_the_release(tmp_path, capsys, monkeypatch):
    """A TensorRT profile: the target runs the project's builder (export.tensorrt_build.build_engines,
    faked here: no TensorRT on this machine) before the switch; the plans are hashed by --check."""
    import export.tensorrt_build as builder
    from deploy import doctor
    from edge.bundle import sha256_file

    calls = []

    def fake_build(profile, bundle, say=print, cache_dir=None):
        calls.append(profile.name)
        (bundle / "engines").mkdir()
        (bundle / "engines/flow_head.plan").write_bytes(b"serialized plan")
        key = {k: NX_FACTS[k] for k in ("tensorrt", "cuda", "gpu", "compute_capability", "l4t", "jetpack")}
        key["onnx_sha256"] = sha256_file(bundle / "flow_head.onnx")
        return {
            "flow_head": {
                "file": "engines/flow_head.plan",
                "sha256": sha256_file(bundle / "engines/flow_head.plan"),
                "key": key,
                "flags": {"strongly_typed": True},
            }
        }

    monkeypatch.setattr(doctor, "facts", lambda *a, **k: dict(NX_FACTS))
    monkeypatch.setattr(builder, "build_engines", fake_build)
    b = make_bundle(tmp_path / "nx", profile="jetson-orin-nx-16gb")
    dest = tmp_path / "robot"
    argv = ["--bundle", str(b), "--profile", "jetson-orin-nx-16gb", "--target", str(dest)]
    rc, out, err = flash(capsys, *argv)
    assert rc == 0 and "engines built" in out and calls == ["jetson-orin-nx-16gb"], err
    import json

    manifest = json.loads((dest / "current/manifest.json").read_text())
    assert manifest["engines"]["flow_head"]["key"]["compute_capability"] == "8.7"
    rc, out, _ = flash(capsys, *argv)
    assert rc == 0 and "was already current" in out and calls == ["jetson-orin-nx-16gb"]  # not rebuilt
    rc, out, _ = flash(capsys, "--check", "--target", str(dest))
    assert rc == 0 and "(6 files" in out  # 2 graphs, the manifest, 2 plans, profile.toml
    (dest / "current/engines/flow_head.plan").write_bytes(b"damaged")
    rc, _, err = flash(capsys, "--check", "--target", str(dest))
    assert rc == 2 and "engines/flow_head.plan is corrupt" in err


def test_first_flash_interrupted_after_upload_can_be_repeated(tmp_path, capsys, bundles, monkeypatch):
    """Killed between the upload and the install: only the upload area is there; the next flash
    takes the target as its own and reuses what arrived."""
    dest = tmp_path / "robot"

    def killed(req):
        raise KeyboardInterrupt

    monkeypatch.setitem(agent.OPS, "install", killed)
    argv = ["--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", str(dest)]
    assert flash(capsys, *argv)[0] == 130
    assert sorted(os.listdir(dest)) == [".incoming"] and not (dest / "current").exists()
    monkeypatch.undo()
    rc, out, err = flash(capsys, *argv)
    assert rc == 0 and "0 files sent" in out and "4 already there" in out, err


KILL_DURING_INSTALL = """
import os, signal, sys
from deploy import agent
from legato.cli import main
agent._sync_tree = lambda folder: os.kill(os.getpid(), signal.SIGKILL)  # killed before the swap
sys.exit(main(["flash", "--bundle", sys.argv[1], "--profile", "x86-cpu", "--target", sys.argv[2]]))
"""


def test_a_later_flash_removes_what_killed_flashes_left(tmp_path, capsys, bundles):
    """Killed (SIGKILL: no cleanup runs) while a release was assembled, three times: each leaves a
    hidden temporary release folder, and the next flash (here one with --keep 0) removes it."""
    import subprocess
    import sys

    b1, b2 = bundles
    dest = tmp_path / "robot"
    assert flash(capsys, "--bundle", str(b1), "--profile", "x86-cpu", "--target", str(dest))[0] == 0
    for _ in range(3):
        p = subprocess.run(
            [sys.executable, "-c", KILL_DURING_INSTALL, str(b2), str(dest)], capture_output=True
        )
        assert p.returncode == -9, p.stderr
    left = [p.name for p in (dest / "releases").iterdir() if p.name.startswith(".")]
    assert len(left) == 1 and ".tmp-" in left[0], left  # each flash removed the one before it left
    rc, out, err = flash(
        capsys, "--bundle", str(b2), "--profile", "x86-cpu", "--target", str(dest), "--keep", "0"
    )
    assert rc == 0, err
    assert [p.name for p in (dest / "releases").iterdir() if p.name.startswith(".")] == []
    assert flash(capsys, "--check", "--target", str(dest))[0] == 0


def test_a_dangling_link_as_target_is_one_line(tmp_path, capsys, bundles):
    link = tmp_path / "robot"
    link.symlink_to(tmp_path / "unmounted")
    rc, _, err = flash(capsys, "--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", str(link))
    assert rc == 2 and err.count("\n") == 1 and "symbolic link" in err and "does not exist" in err
    assert not (tmp_path / "unmounted").exists() and link.is_symlink()


PI05_FP16 = {"prefix": (5_300_000_000, 600_000_000), "flow_head": (1_400_000_000, 250_000_000)}
REDUCED = {"prefix": (8_300_000, 12_000_000), "flow_head": (2_100_000, 3_000_000)}


def test_a_bundle_that_does_not_fit_the_profiles_memory_is_refused_before_any_target(tmp_path, capsys):
    """Full-size pi0.5 in fp16 (about 6.7 GB of weights) cannot run on an Orin Nano 8 GB beside the OS
    and the camera pipeline; nothing is sent. The same manifest fits a Thor."""
    nano = make_bundle(tmp_path / "pi05-nano", profile="jetson-orin-nano-8gb", memory=PI05_FP16)
    dest = tmp_path / "robot"
    rc, _, err = flash(
        capsys, "--bundle", str(nano), "--profile", "jetson-orin-nano-8gb", "--target", str(dest)
    )
    assert rc == 2 and err.count("\n") == 1 and not dest.exists()
    assert "the bundle needs 7.55 GB" in err and "has 8.00 GB of which 3.40 GB stay reserved" in err
    assert "leaving 4.60 GB" in err and "nothing was flashed" in err
    from edge import memory_budget as mb
    from edge.bundle import load_manifest
    from edge.profiles import load_profile

    need = mb.bundle_need(load_manifest(nano).data, nano)
    for name, fits in (("jetson-orin-nano-8gb", False), ("jetson-orin-nx-16gb", True),
                       ("jetson-agx-orin-64gb", True), ("jetson-thor", True)):  # fmt: skip
        dev = load_profile(name).device
        total = int(dev.memory_gb * 1e9)
        assert (mb.fit_problem(need, total, mb.reserve_bytes(total), name) is None) == fits, name


def test_reduced_bundles_fit_every_profile(tmp_path):
    """Recorded sizes of a reduced (few-million-parameter) bundle, and estimates from the files of a
    bundle that records none (the committed reference bundle), fit everywhere."""
    from deploy.flash import memory_fit
    from edge.bundle import load_manifest
    from edge.profiles import list_profiles, load_profile

    committed = sorted((Path(__file__).resolve().parents[2] / "models").glob("*/manifest.json"))
    assert committed  # the reference bundle at least; reduced LeRobot bundles join when committed
    bundles = [load_manifest(make_bundle(tmp_path / "reduced", memory=REDUCED))]
    bundles += [load_manifest(m.parent) for m in committed]
    for name in list_profiles():
        for m in bundles:
            memory_fit(m, load_profile(name))  # raises FlashError when it does not fit


def test_the_profiles_calibration_travels_with_the_release(tmp_path, capsys):
    """A servo profile names its LeRobot calibration beside itself. Before: only profile.toml was
    flashed, and the device's `legato run` (and the engine build, which loads the profile) failed
    with "key 'robot.calibration' = .../releases/R/reference-arm.feetech.json: no such file"."""
    from edge.profiles import load_profile, robot_calibration

    source = load_profile("x86-cpu-feetech")
    b = make_bundle(tmp_path / "b", profile="x86-cpu-feetech")
    dest = tmp_path / "robot"
    rc, _, err = flash(capsys, "--bundle", str(b), "--profile", "x86-cpu-feetech", "--target", str(dest))
    assert rc == 0, err
    flashed = load_profile(dest / "current/profile.toml")
    assert flashed.robot.calibration == str((dest / "current").resolve() / agent.CALIBRATION_FILE)
    assert robot_calibration(flashed) == robot_calibration(source)
    assert flashed.to_dict() | {"robot": None} == source.to_dict() | {"robot": None}
    assert "# LeRobot calibration JSON" in (dest / "current/profile.toml").read_text()  # comments kept
    rc, out, err = flash(capsys, "--check", "--target", str(dest))
    assert rc == 0, err


def test_a_calibration_the_flash_cannot_retarget_is_refused_in_one_line(tmp_path):
    import pytest

    from deploy.flash import FlashError, release_profile_text

    text = "[camera]\ncalibration = \"lens.json\"\n[robot]\n  calibration = 'arm.json'  # mine\n"
    out = release_profile_text(text, "calibration.json", where="p.toml")
    assert out == '[camera]\ncalibration = "lens.json"\n[robot]\n  calibration = "calibration.json"  # mine\n'
    with pytest.raises(FlashError, match=r"p.toml: cannot point its \[robot\] calibration"):
        release_profile_text('robot.calibration = "arm.json"\n', "calibration.json", where="p.toml")


def test_a_damaged_profile_or_calibration_on_the_target_is_caught_by_check_and_repaired(tmp_path, capsys):
    """The motors' limits and zero offsets come from the release's profile.toml and
    calibration.json. Before: only the bundle's files were hashed, so `flash --check` said
    "verifies" over an edited calibration."""
    b = make_bundle(tmp_path / "b", profile="x86-cpu-feetech")
    dest = tmp_path / "robot"
    argv = ("--bundle", str(b), "--profile", "x86-cpu-feetech", "--target", str(dest))
    assert flash(capsys, *argv)[0] == 0
    for name in (agent.CALIBRATION_FILE, agent.PROFILE_FILE):
        f = dest / "current" / name
        good = f.read_bytes()
        f.chmod(0o644)
        edited = good.replace(b"1023", b"1024") if name == agent.CALIBRATION_FILE else good + b"# edited\n"
        f.write_bytes(edited)
        rc, _, err = flash(capsys, "--check", "--target", str(dest))
        assert rc == 2 and err.count("\n") == 1 and f"{name} is corrupt or edited since the flash" in err
        rc, _, err = flash(capsys, *argv)  # the same flash again rebuilds the damaged release
        assert rc == 0, err
        assert (dest / "current" / name).read_bytes() == good
        assert flash(capsys, "--check", "--target", str(dest))[0] == 0
