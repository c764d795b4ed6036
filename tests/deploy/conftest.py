"""Fixtures for the deploy tests: hand-made bundles, and a real OpenSSH server on 127.0.0.1.

The sshd is Debian's openssh-server, started by the test with throwaway host and user keys, an
authorized_keys and a known_hosts written here, and an ssh config file that the flash command
gets with --ssh-config (so nothing in ~/.ssh is read or written). Where sshd or ssh-keygen is
missing the SSH tests skip and say so (.ci/run installs openssh-server).
"""

from __future__ import annotations

import getpass
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from bundles import make_bundle  # noqa: E402

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


@pytest.fixture
def bundles(tmp_path: Path):
    """Two bundles for x86-cpu that differ in one file (data/blob.bin)."""
    return make_bundle(tmp_path / "b1", data=b"weights v1"), make_bundle(tmp_path / "b2", data=b"weights v2")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SshServer:
    port: int
    user: str
    config: Path  # ssh client config: key, known_hosts (with the server's key)
    bare_config: Path  # the same, with an empty known_hosts
    dir: Path

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"


def _wait_listening(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    """Read sshd's stderr (-e) until it says it listens; returns what it said."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while b"Server listening" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if SSHD is None or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip("OpenSSH server or client not installed (apt-get install openssh-server; .ci/run does)")
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n"
        f"StrictModes no\nPermitRootLogin prohibit-password\nPidFile {d / 'sshd.pid'}\n"
        "Subsystem sftp internal-sftp\nLogLevel INFO\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(cfg)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    said = _wait_listening(proc)
    if "Server listening" not in said:
        proc.kill()
        proc.wait()
        pytest.skip(f"sshd did not start here: {' '.join(said.split())[-200:]}")
    host_pub = (d / "host.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    (d / "empty_known_hosts").write_text("")
    common = f"  IdentityFile {d / 'user'}\n  IdentitiesOnly yes\n  GlobalKnownHostsFile /dev/null\n"
    common += "  LogLevel ERROR\n"
    (d / "ssh_config").write_text(f"Host *\n  UserKnownHostsFile {d / 'known_hosts'}\n{common}")
    (d / "ssh_config_bare").write_text(f"Host *\n  UserKnownHostsFile {d / 'empty_known_hosts'}\n{common}")
    try:
        yield SshServer(port, getpass.getuser(), d / "ssh_config", d / "ssh_config_bare", d)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
