"""`legato flash` over the user's OpenSSH client to a real sshd on 127.0.0.1 (see conftest.py)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundles import make_bundle

from legato.cli import main

pytestmark = pytest.mark.timeout(120)
LEGATO = [sys.executable, "-m", "legato.cli"]


def ssh_flash(capsys, server, *argv: str, config: Path | None = None) -> tuple[int, str, str]:
    rc = main(
        [
            "flash",
            *argv,
            "--ssh-config",
            str(config or server.config),
            "--target-python",
            sys.executable,
            "--connect-timeout",
            "5",
        ]
    )
    out = capsys.readouterr()
    return rc, out.out, out.err


def flash_until(fifo: Path, sshd, bundle: Path, url: str, python: str, env: dict | None = None) -> None:
    """Start `legato flash` in its own session, wait until something writes to `fifo` (the point
    the test wants), then SIGKILL the whole session, as a power cut or `kill -9` would."""
    cmd = [
        *LEGATO,
        "flash",
        "--bundle",
        str(bundle),
        "--profile",
        "x86-cpu",
        "--target",
        url,
        "--ssh-config",
        str(sshd.config),
        "--target-python",
        python,
    ]
    proc = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = b""
        deadline = time.monotonic() + 60
        while not got and proc.poll() is None and time.monotonic() < deadline:
            if select.select([fd], [], [], 1.0)[0]:
                got = os.read(fd, 64)
    finally:
        os.close(fd)
    assert got, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_ssh_flash_verify_corrupt_rollback(tmp_path, capsys, sshd, bundles):
    b1, b2 = bundles
    dest = tmp_path / "robot"
    url = sshd.url(dest)
    rc, out, err = ssh_flash(capsys, sshd, "--bundle", str(b1), "--profile", "x86-cpu", "--target", url)
    assert rc == 0, err
    assert out.startswith(f"{url}: ok, current -> tiny-") and "4 files sent" in out
    first = os.readlink(dest / "current")

    rc, out, err = ssh_flash(capsys, sshd, "--bundle", str(b2), "--profile", "x86-cpu", "--target", url)
    assert rc == 0 and "2 files sent" in out and "2 already there" in out, err
    second = os.readlink(dest / "current")
    assert (dest / "current/data/blob.bin").read_bytes() == b"weights v2"

    rc, out, _ = ssh_flash(capsys, sshd, "--check", "--target", url)
    assert rc == 0 and f"current {Path(second).name} verifies" in out

    blob = dest / "current/data/blob.bin"  # a corrupted file on the target is detected
    blob.write_bytes(b"bit rot!!!")
    rc, out, err = ssh_flash(capsys, sshd, "--check", "--target", url)
    assert rc == 2 and err.count("\n") == 1 and "data/blob.bin is corrupt" in err

    rc, out, _ = ssh_flash(capsys, sshd, "--rollback", "--target", url)
    assert rc == 0 and os.readlink(dest / "current") == first and os.readlink(dest / "previous") == second
    assert (dest / "current/data/blob.bin").read_bytes() == b"weights v1"


def test_killed_flash_leaves_previous_current(tmp_path, capsys, sshd, bundles):
    """Kill the flash (SIGKILL, whole process group) while scp uploads: the old release stays current."""
    b1, b2 = bundles
    dest = tmp_path / "robot"
    url = sshd.url(dest)
    assert ssh_flash(capsys, sshd, "--bundle", str(b1), "--profile", "x86-cpu", "--target", url)[0] == 0
    first = os.readlink(dest / "current")

    shim = tmp_path / "bin"
    shim.mkdir()
    fifo = tmp_path / "started"
    os.mkfifo(fifo)
    (shim / "scp").write_text(f"#!/bin/sh\necho started > {fifo}\nexec sleep 300\n")
    (shim / "scp").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    flash_until(fifo, sshd, b2, url, sys.executable, env)
    assert os.readlink(dest / "current") == first
    assert [p.name for p in (dest / "releases").iterdir()] == [Path(first).name]
    assert ssh_flash(capsys, sshd, "--check", "--target", url)[0] == 0
    rc, out, err = ssh_flash(capsys, sshd, "--bundle", str(b2), "--profile", "x86-cpu", "--target", url)
    assert rc == 0 and os.readlink(dest / "current") != first, err  # the next flash goes through


def test_unknown_host_key_is_refused(tmp_path, capsys, sshd, bundles):
    dest = tmp_path / "robot"
    rc, out, err = ssh_flash(
        capsys,
        sshd,
        "--bundle",
        str(bundles[0]),
        "--profile",
        "x86-cpu",
        "--target",
        sshd.url(dest),
        config=sshd.bare_config,
    )
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "unknown host key for 127.0.0.1" in err and "nothing was changed" in err
    assert (sshd.dir / "empty_known_hosts").read_text() == ""  # not recorded either
    assert not dest.exists()


def test_the_users_own_host_key_policy_is_kept(tmp_path, capsys, sshd, bundles):
    """StrictHostKeyChecking=yes is only the default: a config that says accept-new is obeyed."""
    known = tmp_path / "known_hosts"
    known.write_text("")
    cfg = tmp_path / "ssh_config"
    text = sshd.bare_config.read_text().replace(str(sshd.dir / "empty_known_hosts"), str(known))
    cfg.write_text(text + "  StrictHostKeyChecking accept-new\n")
    argv = ["--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", sshd.url(tmp_path / "robot")]
    rc, out, err = ssh_flash(capsys, sshd, *argv, config=cfg)
    assert rc == 0, err
    assert known.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")


def test_target_that_does_not_answer(tmp_path, capsys, sshd, bundles):
    """A port that accepts TCP but never speaks SSH (a hung device)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        url = f"ssh://{sshd.user}@127.0.0.1:{port}{tmp_path / 'robot'}"
        t0 = time.monotonic()
        rc, out, err = ssh_flash(
            capsys, sshd, "--bundle", str(bundles[0]), "--profile", "x86-cpu", "--target", url
        )
    assert rc == 2 and out == "" and err.count("\n") == 1 and time.monotonic() - t0 < 60
    assert "target does not answer" in err and "nothing was changed" in err


def test_profile_not_matching_the_targets_doctor_answers(tmp_path, capsys, sshd):
    b = make_bundle(tmp_path / "thor", profile="jetson-thor")
    dest = tmp_path / "robot"
    rc, _, err = ssh_flash(
        capsys, sshd, "--bundle", str(b), "--profile", "jetson-thor", "--target", sshd.url(dest)
    )
    assert rc == 2 and err.count("\n") == 1 and "profile soc thor, target x86" in err
    assert not dest.exists()


def test_fleet_over_ssh_and_local(tmp_path, capsys, sshd, bundles):
    targets = [sshd.url(tmp_path / "arm1"), sshd.url(tmp_path / "arm2"), str(tmp_path / "arm3")]
    argv = ["--bundle", str(bundles[0]), "--profile", "x86-cpu"]
    for t in targets:
        argv += ["--target", t]
    rc, out, err = ssh_flash(capsys, sshd, *argv)
    lines = out.strip().splitlines()
    assert rc == 0 and len(lines) == 4 and lines[-1] == "3 of 3 targets ok", err
    assert sorted(ln.split(": ok, ")[0] for ln in lines[:-1]) == sorted(targets)
    for name in ("arm1", "arm2", "arm3"):
        assert (tmp_path / name / "current/manifest.json").is_file()


@pytest.fixture
def small_disk(tmp_path):
    """A real 24 MB filesystem (tmpfs) for the target; skips where this user may not mount."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here ({out.stderr.strip()[:80]}): needs root with CAP_SYS_ADMIN"
        )
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_on_the_target_changes_nothing(capsys, sshd, bundles, small_disk):
    b1, b2 = bundles
    dest = small_disk / "legato"
    url = sshd.url(dest)
    assert ssh_flash(capsys, sshd, "--bundle", str(b1), "--profile", "x86-cpu", "--target", url)[0] == 0
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave about 2 MB free on the target's disk
        while True:
            st = os.statvfs(small_disk)
            left = st.f_bavail * st.f_frsize - (2 << 20)
            if left <= 0:
                break
            f.write(b"\0" * min(left, 1 << 20))
    before = {
        str(p.relative_to(dest)): (os.readlink(p) if p.is_symlink() else p.stat().st_size)
        for p in dest.rglob("*")
    }
    rc, out, err = ssh_flash(capsys, sshd, "--bundle", str(b2), "--profile", "x86-cpu", "--target", url)
    assert rc == 2 and out == "" and err.count("\n") == 1
    assert "the target's disk is too full" in err and "nothing was changed" in err
    after = {
        str(p.relative_to(dest)): (os.readlink(p) if p.is_symlink() else p.stat().st_size)
        for p in dest.rglob("*")
    }
    assert after == before


def test_flash_killed_during_the_remote_install_does_not_switch(tmp_path, capsys, sshd, bundles):
    """Kill the workstation's flash while the target assembles the release: the target's agent sees
    its ssh session gone and does not switch, even though it finishes assembling."""
    b1, b2 = bundles
    dest = tmp_path / "robot"
    url = sshd.url(dest)
    assert ssh_flash(capsys, sshd, "--bundle", str(b1), "--profile", "x86-cpu", "--target", url)[0] == 0
    first = os.readlink(dest / "current")
    fifo, pidfile = tmp_path / "assembling", tmp_path / "agent.pid"
    os.mkfifo(fifo)
    wrapper = tmp_path / "python"  # the target's python: holds the install just before the switch
    wrapper.write_text(f"""#!{sys.executable}
import os, sys, select
import deploy.agent as agent
if sys.argv[-1] == "install":
    open({str(pidfile)!r}, "w").write(str(os.getpid()))
    inner = agent._sync_tree
    def held(folder):
        inner(folder)
        with open({str(fifo)!r}, "w") as f:
            f.write("assembled")
        select.select([0], [], [], 30)  # until the workstation's end of our stdin closes (or 30 s)
    agent._sync_tree = held
sys.exit(agent.main([sys.argv[-1]]))
""")
    wrapper.chmod(0o755)
    flash_until(fifo, sshd, b2, url, str(wrapper))
    try:
        pidfd = os.pidfd_open(int(pidfile.read_text()))
    except ProcessLookupError:
        pidfd = None  # the agent saw its stdin close and finished already
    if pidfd is not None:
        try:
            assert select.select([pidfd], [], [], 60)[0], "the target's agent did not finish"
        finally:
            os.close(pidfd)
    assert os.readlink(dest / "current") == first  # not switched
    assert ssh_flash(capsys, sshd, "--check", "--target", url)[0] == 0
    rc, out, err = ssh_flash(capsys, sshd, "--bundle", str(b2), "--profile", "x86-cpu", "--target", url)
    assert rc == 0 and "0 files sent" in out and os.readlink(dest / "current") != first, err
